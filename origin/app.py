"""The origin HTTP app: serves a Store by the object layout of DESIGN.md.

GET/HEAD with strong validators, conditional requests and single byte ranges; bodies are streamed
from the store, never read whole. Anything outside the layout (or under `sources/`) is a 404
before the store is touched. The HTTP semantics themselves (ranges, conditionals, CORS, problem
answers) are shared with the edge, which may not import origin, so they live in reel/http.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram

from origin.base import ObjectInfo, Store, StoreError
from origin.layout import Key, access_key, parse_key
from reel import metrics
from reel.http import (
    CORS,
    PREFLIGHT,
    Unsatisfiable,
    http_date,
    if_range_ok,
    not_modified,
    parse_range,
    problem,
    raw_path_safe,
)
from reel.logs import fields
from reel.playback_token import ACCESS_HEADER, KeyRing, Viewer, split_path

log = logging.getLogger("reel.origin")

IMMUTABLE = "public, max-age=31536000, immutable"
VOD_PLAYLIST = "public, max-age=3600"  # long, but master.m3u8 may be re-published
LIVE = "public, max-age=1"  # about half a live target duration
HEALTH_PROBE_KEY = "vod/healthcheck/master.m3u8"  # need not exist: a miss proves the store answers
HEALTH_PROBE_TIMEOUT = 3.0

STORE_KEY = web.AppKey("origin_store", Store)
REGION_KEY = web.AppKey("origin_region", str)


def cache_control(key: Key, growing: bool = False) -> str:
    """`growing`: a playlist still being written (EVENT, no EXT-X-ENDLIST yet)."""
    if key.kind in ("segment", "init", "image"):
        return IMMUTABLE
    return VOD_PLAYLIST if key.space == "vod" and not growing else LIVE


def key_of(request: web.BaseRequest) -> Key | None:
    """The public object key a request names, or None (404) — never a key under `sources/`, never
    an access marker. A playback token segment (`/vod/{id}/~{token}/...`) is not part of it."""
    if not raw_path_safe(request):
        return None
    key = parse_key(split_path(request.path)[0].removeprefix("/"))
    if key is None or key.space not in ("vod", "live"):  # sources are private uploads
        return None
    return key


class Access:
    """Who may fetch a video's objects, with no database call: control writes an access marker
    (`vod/{id}/.access`: `private` or `unlisted`) for a video that is not public; it is read
    through a cache of `ttl` seconds. Without a key ring no token is valid (markers still hold)."""

    def __init__(self, store: Store, ring: KeyRing | None, region: str | None, ttl: float = 1.0,
                 max_entries: int = 65536) -> None:
        self.store, self.ring, self.region, self.ttl = store, ring, region, ttl
        self.max_entries = max_entries
        self._levels: dict[str, tuple[float, str]] = {}

    async def level(self, video_id: str) -> str:
        """public | private | unlisted."""
        now = time.monotonic()
        cached = self._levels.get(video_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        level = "public"
        try:
            body = b"".join([block async for block in self.store.read(access_key(video_id), 0, 64)])
            level = "unlisted" if body.strip() == b"unlisted" else "private"
        except FileNotFoundError:
            pass
        if len(self._levels) >= self.max_entries:
            self._levels.clear()
        self._levels[video_id] = (now + self.ttl, level)
        return level

    def valid(self, request: web.BaseRequest, video_id: str) -> bool | None:
        """None when the request carries no token, else whether it is valid for `video_id`."""
        token = split_path(request.path)[1]
        if token is None:
            return None
        viewer = Viewer(self.region, request.remote)
        return self.ring is not None and self.ring.verify(token, video_id, viewer)

    async def unknown(self, key: Key) -> bool:
        """No such video at all (no master), so a tokenless 404 must look like a refusal."""
        return self.ring is not None and await self.store.stat(f"{key.space}/{key.owner}/master.m3u8") is None


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.responses = Counter(
            "reel_origin_responses_total",
            "Object responses by object kind and status",
            ["kind", "status"],
            registry=registry,
        )
        self.bytes_sent = Counter("reel_origin_bytes_sent_total", "Body bytes sent", registry=registry)
        self.latency = Histogram(
            "reel_origin_request_seconds",
            "Time from request to last body byte, by object kind",
            ["kind"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )


class ObjectHandler:
    """GET/HEAD of one object: validate, stat, answer conditionals and ranges, stream."""

    def __init__(self, store: Store, stats: Metrics, access: Access) -> None:
        self.store = store
        self.stats = stats
        self.access = access

    async def handle(self, request: web.Request) -> web.StreamResponse:
        started = time.perf_counter()
        key = key_of(request)
        kind = key.kind if key is not None else "invalid"
        try:
            return await self._serve(request, key)
        finally:
            self.stats.latency.labels(kind).observe(time.perf_counter() - started)

    def _count(self, key: Key | None, status: int) -> None:
        self.stats.responses.labels(key.kind if key else "invalid", str(status)).inc()

    async def gate(self, request: web.Request) -> tuple[web.Response | None, dict[str, str]]:
        """For objects answered by someone else (the ingest's live app): the refusal a request
        without a valid token gets, or None and the headers that mark the video's access level."""
        key = key_of(request)
        if key is None:
            return None, {}
        valid = self.access.valid(request, key.owner)
        level = await self.access.level(key.owner)
        if valid is False or (level != "public" and not valid):
            return self._refuse(key, request.method == "HEAD"), {}
        return None, ({} if level == "public" else {ACCESS_HEADER: level})

    def _refuse(self, key: Key | None, head: bool) -> web.Response:
        """The one answer to a request without a valid token, whether the video exists or not."""
        self._count(key, 403)
        return problem(403, "Forbidden", detail="this video needs a valid playback token", head=head)

    async def _serve(self, request: web.Request, key: Key | None) -> web.StreamResponse:
        head = request.method == "HEAD"
        try:
            valid = self.access.valid(request, key.owner) if key is not None else None
            level = await self.access.level(key.owner) if key is not None else "public"
            if valid is False or (level != "public" and not valid):
                return self._refuse(key, head)
            info = await self.store.stat(key.path) if key is not None else None
            growing = info is not None and await self._growing(key, info.size)
            unknown = (key is not None and info is None and level == "public"
                       and await self.access.unknown(key))
        except StoreError as exc:
            # The store is down or refusing (S3 unreachable, throttling past the retries): edges
            # fail over to another origin on a 503.
            log.warning("store failed", extra=fields(key=key.path if key else None, error=str(exc)))
            self._count(key, 503)
            return problem(503, "Store Unavailable", head=head, headers={"Retry-After": "1"})
        if unknown and not valid:
            return self._refuse(key, head)
        if key is None or info is None:
            self._count(key, 404)
            marked = {ACCESS_HEADER: "unknown"} if unknown else None
            return problem(404, "Not Found", head=head, headers=marked)

        return await self._answer(request, key, info, growing, level)

    async def _answer(
        self, request: web.Request, key: Key, info: ObjectInfo, growing: bool, level: str
    ) -> web.StreamResponse:
        """The object's answer: 304, 416, 206 or 200, streamed."""
        headers = {
            "Content-Type": key.content_type,
            "ETag": info.etag,
            "Last-Modified": http_date(info.mtime),
            "Cache-Control": cache_control(key, growing),
            "Accept-Ranges": "bytes",
        }
        if level != "public":  # edges keep it with the copy and check every viewer's token
            headers[ACCESS_HEADER] = level
        if not_modified(request, info.etag, info.mtime):
            self._count(key, 304)
            del headers["Content-Type"], headers["Accept-Ranges"]
            return web.Response(status=304, headers=headers)

        start, end, status = 0, info.size, 200
        if request.method != "HEAD" and if_range_ok(request, info.etag, info.mtime):
            try:
                span = parse_range(request.headers.get("Range"), info.size)
            except Unsatisfiable:
                self._count(key, 416)
                unsatisfied = {"Content-Range": f"bytes */{info.size}"}
                return problem(416, "Range Not Satisfiable", headers=unsatisfied)
            if span is not None:
                start, end, status = span[0], span[1], 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{info.size}"
        return await self._stream(request, key, headers, status, start, end)

    async def _growing(self, key: Key, size: int) -> bool:
        """A media playlist the packager is still appending to must not be cached for long."""
        if key.kind != "playlist" or key.path.endswith("/master.m3u8") or key.space != "vod":
            return False
        tail = b"".join([block async for block in self.store.read(key.path, max(0, size - 64), size)])
        return b"#EXT-X-ENDLIST" not in tail

    async def _stream(
        self,
        request: web.Request,
        key: Key,
        headers: dict[str, str],
        status: int,
        start: int,
        end: int,
    ) -> web.StreamResponse:
        want = 0 if request.method == "HEAD" else end - start
        chunks = self.store.read(key.path, start, end) if want else _empty()
        async with contextlib.aclosing(chunks) as body:
            try:
                # Read the first block before sending headers, so an object deleted since the
                # stat (a live window sliding) is still an honest 404.
                first = await anext(body, None)
            except FileNotFoundError:
                self._count(key, 404)
                return problem(404, "Not Found", head=not want)
            except StoreError as exc:
                log.warning("store read failed", extra=fields(key=key.path, error=str(exc)))
                self._count(key, 503)
                return problem(503, "Store Unavailable", head=not want, headers={"Retry-After": "1"})
            resp = web.StreamResponse(status=status, headers=headers)
            resp.content_length = end - start
            self._count(key, status)
            await resp.prepare(request)
            sent = 0
            try:
                if first is not None:
                    await self._write(resp, first)
                    sent += len(first)
                    async for block in body:
                        await self._write(resp, block)
                        sent += len(block)
            except ConnectionResetError:
                return resp  # the client went away; nothing to tell it
            except (OSError, StoreError) as exc:
                log.warning("store read failed", extra=fields(key=key.path, error=str(exc)))
            if sent != want:
                # Short body (object replaced or store failure): close the connection so the
                # client sees a truncated response instead of waiting for bytes that never come.
                log.warning("short body", extra=fields(key=key.path, sent=sent, want=want))
                if request.transport is not None:
                    request.transport.close()
            return resp

    async def _write(self, resp: web.StreamResponse, block: bytes) -> None:
        await resp.write(block)
        self.stats.bytes_sent.inc(len(block))


async def _empty() -> AsyncIterator[bytes]:
    return
    yield  # pragma: no cover - makes this an async generator


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT)


async def _cors(request: web.BaseRequest, response: web.StreamResponse) -> None:
    for name, value in CORS.items():
        response.headers.setdefault(name, value)


def make_app(store: Store, region: str | None = None, ring: KeyRing | None = None,
             live: str | None = None, live_hold: float = 4.0) -> web.Application:
    """The origin application for `store`; `region` is reported by /healthz. `ring` checks the
    playback tokens of private and unlisted videos (without one, none of their bytes is served).
    With `live` (the ingest's live HTTP URL), `/live/...` is asked of the ingest first
    (origin.live), after the same access check."""
    app = web.Application()
    app[STORE_KEY] = store
    app[REGION_KEY] = region or ""
    stats = Metrics(metrics.install(app))

    async def healthz(request: web.Request) -> web.Response:
        # An origin that cannot reach its store is not one to send edges to: probe the store
        # with a metadata lookup (a missing key is an answer; an error is not).
        try:
            await asyncio.wait_for(store.stat(HEALTH_PROBE_KEY), HEALTH_PROBE_TIMEOUT)
        except (StoreError, OSError, TimeoutError) as exc:
            log.warning("store unreachable", extra=fields(store=repr(store), error=str(exc)))
            return problem(503, "Store Unavailable", detail="the object store does not answer",
                           headers={"Retry-After": "1"})
        return web.json_response({"status": "ok", "region": region})

    async def close_store(app: web.Application) -> None:
        await store.close()

    app.on_cleanup.append(close_store)
    app.router.add_get("/healthz", healthz)
    objects = ObjectHandler(store, stats, Access(store, ring, region))
    app.router.add_route("OPTIONS", "/{path:.*}", _preflight)
    if live:
        from origin.live import LiveProxy

        proxy = LiveProxy(live, objects.handle, live_hold)
        app.on_startup.append(proxy.start)
        app.on_cleanup.append(proxy.close)

        async def live_object(request: web.Request) -> web.StreamResponse:
            try:
                refusal, marks = await objects.gate(request)
            except StoreError:
                return problem(503, "Store Unavailable", headers={"Retry-After": "1"})
            return refusal or await proxy.handle(request, marks)

        app.router.add_get("/live/{path:.*}", live_object)
    app.router.add_get("/{path:.*}", objects.handle)
    app.on_response_prepare.append(_cors)
    return app
