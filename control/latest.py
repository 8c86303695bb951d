"""`GET /api/v1/videos`: public ready videos (or, with `state=live`, streams on air), newest first.

The web app's home page and short-video feed need something to show before anyone has watched
anything (trending counts recent views, so a new platform's trending list is empty), and its
"live now" row every public stream on air, however few watch it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from control.api import PROBLEM, Api
from control.db import Database
from control.models import VideoPage
from control.problems import ProblemError
from control.requests import KEYSET, LIMIT, Param, keyset, keyset_cursor, page, page_size, reads
from control.videos import COLUMNS, Video

_SQL = f"SELECT {COLUMNS} FROM videos WHERE state = ? AND privacy = 'public'"
STATES = ("ready", "live")
STATE = Param("state", "query", {"type": "string", "enum": list(STATES), "default": "ready"},
              description="ready: videos to watch; live: streams on air now")


class LatestHandlers:
    def __init__(self, db: Database, render: Callable[[web.Request, Video], dict[str, Any]]) -> None:
        self.db = db
        self.render = render

    def add_routes(self, api: Api) -> None:
        api.route("GET", "/api/v1/videos", self.latest, tag="videos",
                  summary="Public ready videos (or live streams on air), newest first",
                  params=[STATE, LIMIT, KEYSET],
                  responses={200: VideoPage, 400: PROBLEM})

    async def latest(self, request: web.Request) -> web.Response:
        limit = page_size(request)
        state = request.query.get("state", "ready")
        if state not in STATES:
            raise ProblemError(400, f"`state` must be one of {', '.join(STATES)}, not {state!r}")
        sql, params = _SQL, [state]
        after = keyset(request)
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [after[0], after[0], after[1]]
        rows = await reads(request, self.db).fetchall(
            sql + " ORDER BY created_at DESC, id DESC LIMIT ?", (*params, limit + 1))
        videos = [Video.from_row(r) for r in rows]
        return web.json_response(page(videos, limit, lambda v: self.render(request, v),
                                      lambda v: keyset_cursor(v.created_at, v.id)))
