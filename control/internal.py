"""Reading the API in process, as an anonymous client would: what the pages render.

A page shows exactly what `GET /api/v1/...` shows the public (the same handlers, the same
visibility rules, the same JSON), without a loopback HTTP round trip or a second copy of any query;
or, given a session token, what it shows that user (a private video to its owner).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web
from yarl import URL

from control.accounts import USER_KEY
from control.problems import ProblemError


async def api_get(request: web.Request, path: str,
                  query: Mapping[str, str | int | float] | None = None, *,
                  token: str | None = None) -> Any | None:
    """The JSON body of anonymous `GET path?query` (or `token`'s user's), routed by the app's
    own router; None for a 404. Other refusals raise their `ProblemError` (a page shows its
    detail)."""
    headers = {k: v for k, v in request.headers.items()
               if k.lower() not in (hdrs.AUTHORIZATION.lower(), hdrs.COOKIE.lower())}
    if token is not None:
        headers[hdrs.AUTHORIZATION] = f"Bearer {token}"
    sub = request.clone(rel_url=URL(path).with_query(dict(query or {})), headers=headers)
    sub.pop(USER_KEY, None)  # a clone copies the page request's state: forget who asked
    match = await request.app.router.resolve(sub)
    if match.http_exception is not None:
        return None
    # clone() keeps the page's own match; the sub-request needs the API route's (its path ids).
    sub._match_info = match  # noqa: SLF001 - aiohttp sets this only while dispatching
    try:
        response = await match.handler(sub)
    except ProblemError as exc:
        if exc.status == 404:
            return None
        raise
    assert isinstance(response, web.Response) and response.body is not None
    return json.loads(bytes(response.body))
