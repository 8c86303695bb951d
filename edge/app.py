"""The edge as an aiohttp application, and `make_app`, which builds an edge.

`reel edge` serves the same edge through its own protocol (server.py), which is several times
faster on cache hits and fans a fetch out to its waiters without a task each; this app is the
edge for aiohttp hosts (TestServer, AppRunner, embedding). Both fronts answer alike: they build
an `Ask`, call `Edge.answer`, and send what `shape` says.

Paths are the origin's (`/vod/…`, `/live/…`); the query string is not part of the cache key and
is not forwarded, except a live playlist's LL-HLS directives (`_HLS_msn`, `_HLS_part`,
`_HLS_skip`, normalised by `edge.http.blocking_query`): they are part of its key and asked
upstream, so viewers waiting on the same blocking reload share one upstream request.
Every response carries `X-Cache` (HIT | MISS | COALESCED | STALE) and `Age`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import ProcessCollector

from edge.api import ApiEdge, ApiMetrics
from edge.cache import Entry
from edge.http import Ask, Shape, XCache, key_of_target, local, refusal, shape, split_target
from edge.inflight import Cursor, FetchFailed, TooManyReaders
from edge.node import MAX_PURGE_BODY, RELAY_HEADER, Edge, Settings
from reel import metrics
from reel.http import CORS, PREFLIGHT, problem

EDGE_KEY = web.AppKey("edge", Edge)
API_KEY = web.AppKey("edge_api", ApiEdge)  # /api/v1/ to control: served by edge.server's front
SENT = web.RequestKey("sent", int)  # body bytes written, for the metrics
RESULT = web.RequestKey("result", XCache)  # X-Cache when the fetch said otherwise (Head.x_cache_for)


class Front:
    """aiohttp handlers over one Edge (its /metrics is reel.metrics'; sibling workers exist only
    under `reel edge`, whose front sums them)."""

    def __init__(self, edge: Edge) -> None:
        self.edge = edge

    async def handle(self, request: web.Request) -> web.StreamResponse:
        head_only = request.method == "HEAD"
        key, token = split_target(request.raw_path)
        if key is None:
            return problem(404, "Not Found", head=head_only)
        headers = request.headers
        ask = Ask(request.method, key, headers.get("Range"), headers.get("If-Range"),
                  headers.get("If-None-Match"), headers.get("If-Modified-Since"),
                  request.query.get("CMCD") or headers.get("CMCD-Request"), token)
        if token is not None and not self.edge.admits(ask, request.remote):
            return await self._send(request, refusal(head_only), None)
        started = time.perf_counter()
        x_cache, source = self.edge.answer(ask)
        try:
            if isinstance(source, Entry) and source.guarded and token is None:
                return await self._send(request, refusal(head_only), None)
            if isinstance(source, Entry):
                out = shape(ask, source, len(source.body), x_cache, int(source.age(time.monotonic())))
                return await self._send(request, out, source)
            try:
                cursor = source.cursor()
            except TooManyReaders:
                request[RESULT] = XCache.MISS
                return await self._send(request, self.edge.too_many_waiters(head_only), None)
            return await self._follow(request, ask, x_cache, cursor)
        finally:
            self.edge.stats.served(request.get(RESULT, x_cache), time.perf_counter() - started,
                                   request.get(SENT, 0))

    async def _follow(
        self, request: web.Request, ask: Ask, x_cache: XCache, cursor: Cursor
    ) -> web.StreamResponse:
        """Answer from a fetch in progress as its bytes arrive."""
        head_only = ask.method == "HEAD"
        try:
            try:
                async with asyncio.timeout(self.edge.settings.waiter_timeout):
                    head = await cursor.head()
            except TimeoutError:
                self.edge.stats.timeouts["wait"] += 1
                return await self._send(request, local(504, "Upstream Timeout", head=head_only), None)
            except FetchFailed:
                return await self._send(request, local(502, "Bad Gateway", head=head_only), None)
            request[RESULT] = head.x_cache_for(x_cache)
            if head.guarded and ask.token is None:
                return await self._send(request, refusal(head_only), None)
            out = shape(ask, head, head.length, request[RESULT], head.age)
            return await self._send(request, out, cursor)
        finally:
            cursor.close()

    async def _send(
        self, request: web.Request, out: Shape, source: Entry | Cursor | None
    ) -> web.StreamResponse:
        resp = web.StreamResponse(status=out.status, headers=out.headers)
        if out.length is not None and out.status != 304:
            resp.content_length = out.length
        await resp.prepare(request)
        if out.body:
            await resp.write(out.body)
            request[SENT] = len(out.body)
        elif out.span is not None and source is not None:
            start, end = out.span
            if isinstance(source, Entry):
                chunks = _entry_slices(source, start, end)
            else:
                chunks = _slices(source, start, end)
            await self._stream(request, resp, chunks)
        return resp

    @staticmethod
    async def _stream(
        request: web.Request, resp: web.StreamResponse, chunks: AsyncIterator[bytes | memoryview]
    ) -> None:
        sent = 0
        try:
            async for chunk in chunks:
                await resp.write(chunk)
                sent += len(chunk)
        except FetchFailed:
            # The head is sent, so the status can't change: cut the connection so the client
            # knows the body is incomplete (a chunked body would otherwise end cleanly).
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass  # the client left; the shared fetch goes on without it
        finally:
            request[SENT] = sent

    async def other(self, request: web.Request) -> web.Response:
        """Any other method: 405 on an object, 404 elsewhere (problem+json, never aiohttp's text)."""
        if key_of_target(request.raw_path) is not None:
            return problem(405, "Method Not Allowed", headers={"Allow": "GET, HEAD, OPTIONS"})
        return problem(404, "Not Found")

    # -- small routes ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(self.edge.health())

    async def purge(self, request: web.Request) -> web.Response:
        refused = self.edge.authorize(request.headers.get("Authorization"))
        if refused == 403:
            return problem(403, "Purge Disabled", detail="this edge has no purge token")
        if refused == 401:
            return problem(401, "Unauthorized", headers={"WWW-Authenticate": 'Bearer realm="purge"'})
        if request.content_length is not None and request.content_length > MAX_PURGE_BODY:
            return problem(413, "Content Too Large")
        try:
            body = await request.content.read(MAX_PURGE_BODY + 1)
            purged = await self.edge.purge(body, RELAY_HEADER in request.headers)
        except ValueError as exc:
            return problem(400, "Bad Purge Request", detail=str(exc))
        return web.json_response({"purged": purged})


async def _slices(cursor: Cursor, start: int, end: int | None) -> AsyncIterator[bytes | memoryview]:
    """The bytes [start, end) of a fetch in progress, as they arrive."""
    position = 0
    async for chunk in cursor:
        chunk_end = position + len(chunk)
        if chunk_end > start and (end is None or position < end):
            view = memoryview(chunk)
            yield view[max(start - position, 0) : len(chunk) if end is None else end - position]
        position = chunk_end
        if end is not None and position >= end:
            return


async def _entry_slices(entry: Entry, start: int, end: int | None) -> AsyncIterator[memoryview]:
    for chunk in entry.chunks(start, end):
        yield chunk


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT)


async def _defaults(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """CORS on everything, and X-Cache/Age even on answers the edge makes itself."""
    for name, value in CORS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("X-Cache", XCache.MISS)
    response.headers.setdefault("Age", "0")


def make_app(
    region: str,
    origins: list[str],
    cache_bytes: int,
    shield: str | None = None,
    *,
    max_object_bytes: int | None = None,
    purge_token: str | None = None,
    control: str | None = None,
    control_secret: str | None = None,
    api_cache_bytes: int | None = None,
    **tuning: object,
) -> web.Application:
    """The edge for `region`: fetches through `shield` when given (the origins stay as its
    fallback), else from `origins` in order (nearest first).

    Objects over `max_object_bytes` (default: an eighth of the cache, at most 64 MiB) are
    streamed through and not cached. `tuning` sets any other field of `edge.node.Settings`
    (timeouts, waiting list, stale windows, prefetch depth, sibling workers).

    With `control` (its URL), `reel edge`'s front (edge.server) also serves `/api/v1/` through
    an `edge.api.ApiEdge` with a cache of `api_cache_bytes` (default: a sixteenth of the
    media cache), telling control who its clients are with `control_secret`.
    """
    if max_object_bytes is None:
        max_object_bytes = min(cache_bytes // 8, 64 * 1024 * 1024)
    settings = Settings(
        region=region,
        upstreams=[shield, *origins] if shield else list(origins),
        cache_bytes=cache_bytes,
        max_object_bytes=max_object_bytes,
        purge_token=purge_token or None,
        **tuning,  # type: ignore[arg-type]
    )
    app = web.Application(client_max_size=MAX_PURGE_BODY)
    registry = metrics.install(app)
    ProcessCollector(registry=registry)  # CPU and memory: what a load test divides by its viewers
    edge = Edge(settings, registry)
    app[EDGE_KEY] = edge
    if control:
        api = ApiEdge.for_control(settings, control.rstrip("/"), control_secret,
                                  api_cache_bytes or max(cache_bytes // 16, 1 << 20))
        ApiMetrics(api, app[metrics.REGISTRY_KEY])
        app[API_KEY] = api
    front = Front(edge)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await edge.start()
        yield
        await edge.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", front.healthz)
    app.router.add_post("/purge", front.purge)
    app.router.add_route("OPTIONS", "/{path:.*}", _preflight)
    app.router.add_get("/{path:.*}", front.handle)
    app.router.add_route("*", "/{path:.*}", front.other)
    app.on_response_prepare.append(_defaults)
    return app
