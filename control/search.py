"""Search over public ready videos: SQLite FTS5, bm25-ranked, accent- and case-insensitive.

The query is never handed to FTS5 as syntax: it is cut into words, each quoted, and the last one
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


def match_expression(q: str) -> str | None:
    """The FTS5 MATCH string for the user's words, or None when there are none."""
    words = _WORD.findall(q)[:MAX_TERMS]
    if not words:
        return None
    quoted = [f'"{w}"' for w in words]  # \w+ has no quote: nothing to escape
    quoted[-1] += "*"
    return " ".join(quoted)


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
        if len(q) > MAX_QUERY:
            raise ProblemError(400, f"`q` is limited to {MAX_QUERY} characters")
        match = match_expression(q)
        if match is None:
            raise ProblemError(400, "`q` must contain at least one letter or digit")
        limit = page_size(request)
        cursor = decode_cursor(request, (int,))
        offset = cursor[0] if cursor else 0
        if not 0 <= offset <= MAX_OFFSET:
            raise ProblemError(400, "`cursor` is not a cursor this API gave out")
        where = ["videos_fts MATCH ?"]
        params: list[Any] = [match]
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
        # Ranking every match of a common word costs time in proportion to the catalog; the
        # newest CANDIDATES matches are ranked instead (FTS5 walks its doclists by rowid, which
        # is upload order, and stops early). Rarer queries, the usual case, rank exactly.
        rows = await self.db.fetchall(
            f"SELECT {columns} FROM ("
            f"  SELECT videos_fts.rowid AS doc, bm25(videos_fts, {WEIGHTS}) AS score"
            f"  FROM videos_fts JOIN videos v ON v.rowid = videos_fts.rowid"
            f"  WHERE {' AND '.join(where)} ORDER BY videos_fts.rowid DESC LIMIT ?"
            f") AS hits JOIN videos v ON v.rowid = hits.doc"
            f" ORDER BY hits.score, hits.doc DESC LIMIT ? OFFSET ?",
            (*params, CANDIDATES, limit + 1, offset))
        videos = [Video.from_row(r) for r in rows]
        body = page(videos, limit, lambda _: (offset + limit,),
                    lambda v: self.render(request, v))
        if offset + limit > MAX_OFFSET:
            body["next_cursor"] = None
        return web.json_response(body)
