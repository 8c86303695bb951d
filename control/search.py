"""Search over public ready videos: ranked, prefix, accent- and case-insensitive.

SQLite: FTS5 with bm25; PostgreSQL: tsvector/GIN with ts_rank_cd (see `control.pg`). The query is
never handed to either as syntax: it is cut into words, each quoted, and the last one
matches as a prefix (as-you-type). Title counts most, then tags, then the description.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from control.accounts import Auth
from control.db import Database
from control.problems import ProblemError
from control.requests import decode_cursor, page, page_size, query_number
from control.videos import COLUMNS, Video

MAX_QUERY = 200
MAX_TERMS = 8
MAX_OFFSET = 1000  # deep pages of a ranked list are noise; refine the query instead
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


def _timestamp(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if not raw:
        return None
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise ProblemError(400, f"`{name}` must be an ISO 8601 date or date-time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


class SearchHandlers:
    def __init__(self, db: Database, auth: Auth,
                 render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.db = db
        self.auth = auth
        self.render = render

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/v1/search", self.search)

    async def search(self, request: web.Request) -> web.Response:
        q = request.query.get("q", "")
        if not q:
            raise ProblemError(400, "`q` is required: the words to look for")
        if len(q) > MAX_QUERY:
            raise ProblemError(400, f"`q` is limited to {MAX_QUERY} characters")
        words = query_words(q)
        limit = page_size(request)
        cursor = decode_cursor(request, (int,))
        offset = cursor[0] if cursor else 0
        if not 0 <= offset <= MAX_OFFSET:
            raise ProblemError(400, "`cursor` is not a cursor this API gave out")
        if not words:  # punctuation only: a query that matches nothing, as on any search page
            return web.json_response({"items": [], "next_cursor": None})
        postgres = self.db.dialect == "postgresql"
        where: list[str] = []
        params: list[Any] = [words if postgres else match_expression(words)]
        if creator := request.query.get("creator"):
            where.append("v.owner_id = ?")
            params.append(creator)
        for name, op in (("min_duration", ">="), ("max_duration", "<=")):
            if (value := query_number(request, name)) is not None:
                where.append(f"v.duration {op} ?")
                params.append(value)
        for name, op in (("uploaded_after", ">="), ("uploaded_before", "<")):
            if (ts := _timestamp(request, name)) is not None:
                where.append(f"v.created_at {op} ?")
                params.append(ts)
        columns = ", ".join("v." + c for c in COLUMNS.split(", "))
        sql = (_postgres_sql if postgres else _sqlite_sql)(columns, where)
        rows = await self.db.fetchall(sql, (*params, CANDIDATES, limit + 1, offset))
        videos = [Video.from_row(r) for r in rows]
        body = page(videos, limit, lambda _: (offset + limit,),
                    lambda v: self.render(request, v))
        if offset + limit > MAX_OFFSET:
            body["next_cursor"] = None
        return web.json_response(body)
