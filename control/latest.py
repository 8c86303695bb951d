"""`GET /api/v1/videos`: public ready videos, newest first.

The web app's home page and short-video feed need something to show before anyone has watched
anything (trending counts recent views, so a new platform's trending list is empty).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from control.api import PROBLEM, Api
from control.db import Database
from control.models import VideoPage
from control.requests import KEYSET, LIMIT, keyset, keyset_cursor, page, page_size, reads
from control.videos import COLUMNS, Video

_SQL = f"SELECT {COLUMNS} FROM videos WHERE state = 'ready' AND privacy = 'public'"


class LatestHandlers:
    def __init__(self, db: Database, render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.db = db
        self.render = render

    def add_routes(self, api: Api) -> None:
        api.route("GET", "/api/v1/videos", self.latest, tag="videos",
                  summary="Public ready videos, newest first", params=[LIMIT, KEYSET],
                  responses={200: VideoPage, 400: PROBLEM})

    async def latest(self, request: web.Request) -> web.Response:
        limit = page_size(request)
        sql, params = _SQL, []
        after = keyset(request)
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params = [after[0], after[0], after[1]]
        rows = await reads(request, self.db).fetchall(
            sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit + 1))
        videos = [Video.from_row(r) for r in rows]
        return web.json_response(page(videos, limit, lambda v: self.render(request, v),
                                      lambda v: keyset_cursor(v.created_at, v.id)))
