"""Live at the origin: `/live/...` is asked of the ingest that makes it (`reel origin --live URL`).

The newest parts and playlists exist only in the ingest's memory (DESIGN.md: the store is never
between a part's creation and a waiting viewer), so an origin passes each live request on with
its query (`_HLS_msn`, `_HLS_part`, `_HLS_skip`: a blocking reload is held there, not here) and
streams the answer back as it arrives (a preload-hinted part grows chunk by chunk). When the
ingest cannot be reached, what the store holds (completed segments, init segments, the plain
playlists) is served instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import aiohttp
from aiohttp import web
from yarl import URL

from reel.logs import fields
from reel.playback_token import split_path

log = logging.getLogger("reel.origin")

# Request headers that decide the answer; response headers worth passing back.
FORWARDED = ("Range", "If-Range", "If-None-Match", "If-Modified-Since",
             # who watches (reel.viewers): edges' counts, or a player's own marks
             "X-Reel-Viewers", "User-Agent", "CMCD-Request", "CMCD-Session")
RETURNED = ("Content-Type", "Cache-Control", "ETag", "Last-Modified", "Content-Range", "Accept-Ranges",
            "Retry-After", "Expires")

Fallback = Callable[[web.Request], Awaitable[web.StreamResponse]]


class LiveProxy:
    """GET/HEAD under /live/: the ingest's answer, streamed; `fallback` (the store) when the
    ingest does not answer. `hold` bounds the wait for the ingest's head: a little more than a
    blocking reload's longest hold (three target durations)."""

    def __init__(self, live_url: str, fallback: Fallback, hold: float = 4.0) -> None:
        self.base = live_url.rstrip("/")
        self.fallback = fallback
        self.timeout = aiohttp.ClientTimeout(total=None, sock_connect=1.0, sock_read=hold)
        self._session: aiohttp.ClientSession | None = None

    async def start(self, app: web.Application) -> None:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
        self._session = aiohttp.ClientSession(connector=connector, timeout=self.timeout,
                                              auto_decompress=False)

    async def close(self, app: web.Application) -> None:
        if self._session is not None:
            await self._session.close()

    async def handle(self, request: web.Request,
                     extra: dict[str, str] | None = None) -> web.StreamResponse:
        """`extra`: headers added to the answer (the video's access level for the edges)."""
        assert self._session is not None, "start() first"
        headers = {name: request.headers[name] for name in FORWARDED if name in request.headers}
        headers["X-Forwarded-For"] = request.remote or ""  # a player asking the origin itself
        path, _ = split_path(request.raw_path.partition("?")[0])  # the token is not the ingest's
        query = request.raw_path.partition("?")[2]
        url = URL(self.base + path + (f"?{query}" if query else ""), encoded=True)
        try:
            upstream = await self._session.request(request.method, url, headers=headers,
                                                   allow_redirects=False)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("ingest unreachable: serving the store",
                        extra=fields(path=request.path, error=repr(exc)))
            return await self.fallback(request)
        async with upstream:
            return await self._relay(request, upstream, extra or {})

    async def _relay(self, request: web.Request, upstream: aiohttp.ClientResponse,
                     extra: dict[str, str]) -> web.StreamResponse:
        """The ingest's answer as it arrives; one cut short upstream is cut short here too, so
        the client never takes a truncated part for whole."""
        response = web.StreamResponse(status=upstream.status, headers={
            **{name: upstream.headers[name] for name in RETURNED if name in upstream.headers},
            **extra})
        if upstream.content_length is not None and request.method != "HEAD":
            response.content_length = upstream.content_length
        elif request.method != "HEAD" and upstream.status not in (204, 304):
            response.enable_chunked_encoding()
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.warning("ingest answer cut short", extra=fields(path=request.path, error=repr(exc)))
            if request.transport is not None:
                request.transport.close()
            return response
        await response.write_eof()
        return response
