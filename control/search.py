"""Search over public ready videos (and streams live now): ranked, prefix, accent- and case-insensitive.

SQLite: FTS5 with bm25; PostgreSQL: tsvector/GIN with ts_rank_cd (see `control.pg`). The query is
never handed to either as syntax: it is cut into words, each quoted, and the last one
matches as a prefix (as-you-type). Title counts most, then tags, then the description.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from aiohttp import web

from control.accounts import Auth
from control.api import PROBLEM, Api
from control.db import Database
from control.models import ID_PATTERN, VideoPage
from control.problems import ProblemError
from control.requests import (
    LIMIT,
    MAX_OFFSET,
    OFFSET,
    Param,
    offset,
    page,
    page_size,
    query_number,
    query_time,
    reads,
)
from control.videos import COLUMNS, Video

MAX_QUERY = 200
MAX_TERMS = 8
CANDIDATES = 2000  # matches ranked per query, newest first (see `search`)
_WORD = re.compile(r"\w+")
WEIGHTS = "10.0, 2.0, 5.0"  # title, description, tags (videos_fts column order)


def query_words(q: str) -> list[str]:
    """The user's words (letters, digits): never query syntax."""
    return _WORD.findall(q)[:MAX_TERMS]


def match_expression(words: list[str]) -> str:
    """The FTS5 MATCH string for `words`: each quoted, the last one a prefix."""
    quoted = [f'"{w}"' for w in words]  # \w+ has no quote: nothing to escape
    quoted[-1] += "*"
    return " ".join(quoted)


def _sqlite_sql(columns: str, where: list[str]) -> str:
    # Ranking every match of a common word costs time in proportion to the catalog; the newest
    # CANDIDATES matches are ranked instead (FTS5 walks its doclists by rowid, which is upload
    # order, and stops early). Rarer queries, the usual case, rank exactly.
    return (f"SELECT {columns} FROM ("
            f"  SELECT videos_fts.rowid AS doc, bm25(videos_fts, {WEIGHTS}) AS score"
            f"  FROM videos_fts JOIN videos v ON v.rowid = videos_fts.rowid"
            f"  WHERE videos_fts MATCH ? {''.join(' AND ' + w for w in where)}"
            f"  ORDER BY videos_fts.rowid DESC LIMIT ?"
            f") AS hits JOIN videos v ON v.rowid = hits.doc"
            f" ORDER BY hits.score, hits.doc DESC LIMIT ? OFFSET ?")


def _postgres_sql(columns: str, where: list[str]) -> str:
    # The same shape on PostgreSQL: the GIN index finds the matches, the newest CANDIDATES are
    # ranked by cover density (title weighs A, tags B, description C).
    return (f"WITH q AS (SELECT reel_prefix_query(?::text[]) AS q),"
            f" hits AS (SELECT v.id, v.search, v.created_at FROM videos v, q"
            f"  WHERE v.search @@ q.q {''.join(' AND ' + w for w in where)}"
            f"  ORDER BY v.created_at DESC LIMIT ?)"
            f" SELECT {columns} FROM hits JOIN videos v ON v.id = hits.id, q"
            f" ORDER BY ts_rank_cd(hits.search, q.q) DESC, hits.created_at DESC, hits.id DESC"
            f" LIMIT ? OFFSET ?")


class SearchHandlers:
    def __init__(self, db: Database, auth: Auth,
                 render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.db = db
        self.auth = auth
        self.render = render

    def add_routes(self, api: Api) -> None:
        api.route("GET", "/api/v1/search", self.search, tag="search",
                  summary="Full-text search over public ready videos and live streams (bm25; "
                          "the last word matches as a prefix; a query of no words finds nothing)",
                  params=[Param("q", "query", {"type": "string", "minLength": 1,
                                               "maxLength": MAX_QUERY}, required=True),
                          Param("creator", "query", {"type": "string", "pattern": ID_PATTERN}),
                          Param("min_duration", "query", {"type": "number"}),
                          Param("max_duration", "query", {"type": "number"}),
                          Param("uploaded_after", "query", {"type": "string", "format": "date-time"}),
                          Param("uploaded_before", "query", {"type": "string", "format": "date-time"}),
                          LIMIT, OFFSET],
                  responses={200: VideoPage, 400: PROBLEM})

    async def search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        if not q:
            raise ProblemError(400, "`q` is required: the words to look for")
        if len(q) > MAX_QUERY:
            raise ProblemError(400, f"`q` is limited to {MAX_QUERY} characters")
        words = query_words(q)
        limit = page_size(request)
        skip = offset(request)
        creator = request.query.get("creator")
        if creator is not None and re.fullmatch(ID_PATTERN, creator) is None:
            raise ProblemError(400, "`creator` must be a user id")
        bounds = (("duration", ">=", query_number(request, "min_duration")),
                  ("duration", "<=", query_number(request, "max_duration")),
                  ("created_at", ">=", query_time(request, "uploaded_after")),
                  ("created_at", "<", query_time(request, "uploaded_before")))
        if not words or skip > MAX_OFFSET:  # punctuation only, or past the deepest page
            return web.json_response({"items": [], "next_cursor": None})
        postgres = self.db.dialect == "postgresql"
        where: list[str] = []
        params: list[Any] = [words if postgres else match_expression(words)]
        if creator:
            where.append("v.owner_id = ?")
            params.append(creator)
        for column, op, value in bounds:
            if value is not None:
                where.append(f"v.{column} {op} ?")
                params.append(value)
        columns = ", ".join("v." + c for c in COLUMNS.split(", "))
        sql = (_postgres_sql if postgres else _sqlite_sql)(columns, where)
        rows = await reads(request, self.db).fetchall(sql, (*params, CANDIDATES, limit + 1, skip))
        videos = [Video.from_row(r) for r in rows]
        body = page(videos, limit, lambda v: self.render(request, v), lambda _: str(skip + limit))
        if skip + limit > MAX_OFFSET:
            body["next_cursor"] = None
        return web.json_response(body)
