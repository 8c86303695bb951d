"""The edge HTTP app: cache lookup → join or lead a coalesced fetch → respond.

Paths are the origin's (`/vod/…`, `/live/…`); the query string is not part of the cache key and
is not forwarded. Every response carries `X-Cache` (HIT | MISS | COALESCED) and `Age`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from edge.cache import Cache, Entry, freshness, select_headers
from edge.http import key_of
from edge.inflight import Abandoned, FetchFailed, Flights, Head, InFlight, Reader, TooManyReaders
from edge.upstream import Upstream, UpstreamError
from reel import metrics
from reel.http import (
    CORS,
    PREFLIGHT,
    Unsatisfiable,
    if_range_ok,
    not_modified,
    parse_http_date,
    parse_range,
    problem,
)
from reel.logs import fields

log = logging.getLogger("reel.edge")

NOT_MODIFIED_HEADERS = ("ETag", "Last-Modified", "Cache-Control", "Expires")
X_CACHE = web.RequestKey("x_cache", str)  # MISS or COALESCED, once the request has a flight


@dataclass(frozen=True)
class Settings:
    region: str
    upstreams: list[str]  # the shield, or the origins nearest first
    cache_bytes: int
    max_object_bytes: int
    max_waiters: int = 10_000
    waiter_timeout: float = 30.0
    connect_timeout: float = 2.0
    read_timeout: float = 10.0
    # Unread bytes an uncacheable fetch may hold before it waits for its slowest reader.
    stream_window: int = 1 << 20


class Metrics:
    def __init__(self, registry: CollectorRegistry, cache: Cache, flights: Flights) -> None:
        self.requests = Counter(
            "reel_edge_requests_total",
            "Object requests by cache result",
            ["cache"],
            registry=registry,
        )
        self.latency = Histogram(
            "reel_edge_request_seconds",
            "Time from request to last body byte, by cache result",
            ["cache"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.upstream_fetches = Counter(
            "reel_edge_upstream_fetches_total",
            "Upstream responses by upstream and status",
            ["origin", "status"],
            registry=registry,
        )
        self.upstream_errors = Counter(
            "reel_edge_upstream_errors_total",
            "Upstream connect errors, timeouts, 5xx and broken bodies",
            ["origin"],
            registry=registry,
        )
        self.evictions = Counter(
            "reel_edge_evictions_total",
            "Objects evicted to stay under the byte bound",
            registry=registry,
        )
        self.bytes_sent = Counter(
            "reel_edge_bytes_sent_total", "Body bytes sent to clients", registry=registry
        )
        Gauge("reel_edge_cache_bytes", "Bytes held by the cache", registry=registry).set_function(
            lambda: cache.bytes
        )
        Gauge("reel_edge_cache_objects", "Objects in the cache", registry=registry).set_function(
            lambda: len(cache)
        )
        Gauge("reel_edge_inflight_fetches", "Upstream fetches in progress", registry=registry).set_function(
            lambda: len(flights)
        )
        Gauge(
            "reel_edge_inflight_readers", "Requests following an upstream fetch", registry=registry
        ).set_function(lambda: flights.readers)


class _Source:
    """What a response is made from: a cached entry or a fetch in progress."""

    status: int
    headers: tuple[tuple[str, str], ...]
    length: int | None
    age: int

    def chunks(self, start: int, end: int | None) -> AsyncGenerator[bytes | memoryview, None]:
        raise NotImplementedError


class _EntrySource(_Source):
    def __init__(self, entry: Entry, now: float) -> None:
        self.status, self.headers = entry.status, entry.headers
        self.length, self.age = len(entry.body), int(entry.age(now))
        self._entry = entry

    async def chunks(self, start: int, end: int | None) -> AsyncGenerator[memoryview, None]:
        for chunk in self._entry.chunks(start, end):
            yield chunk


class _FlightSource(_Source):
    def __init__(self, reader: Reader, head: Head) -> None:
        self.status, self.headers = head.status, head.headers
        self.length, self.age = head.length, head.age
        self._reader = reader

    async def chunks(self, start: int, end: int | None) -> AsyncGenerator[bytes | memoryview, None]:
        position = 0
        async for chunk in self._reader:
            chunk_end = position + len(chunk)
            if chunk_end > start and (end is None or position < end):
                view = memoryview(chunk)
                yield view[max(start - position, 0) : len(chunk) if end is None else end - position]
            position = chunk_end
            if end is not None and position >= end:
                return


class Edge:
    """One region's edge: its cache, its fetches in progress, its upstream."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.cache = Cache(settings.cache_bytes, settings.max_object_bytes, self._evicted)
        self.flights = Flights(settings.max_waiters, settings.stream_window)
        self.metrics = Metrics(registry, self.cache, self.flights)
        self.upstream = Upstream(
            settings.upstreams,
            fetches=self.metrics.upstream_fetches,
            errors=self.metrics.upstream_errors,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def _evicted(self, key: str, entry: Entry) -> None:
        self.metrics.evictions.inc()

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: the upstream session for the app's life; fetches cancelled at the end."""
        await self.upstream.start()
        yield
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.upstream.close()

    # -- requests -----------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.StreamResponse:
        key = key_of(request)
        if key is None:
            return problem(404, "Not Found", head=request.method == "HEAD")
        started = time.perf_counter()
        result = "HIT"
        try:
            entry = self.cache.get(key)
            now = time.monotonic()
            if entry is not None and entry.fresh(now):
                return await self._send(request, _EntrySource(entry, now), result)
            result = "MISS"
            return await self._follow(request, key)
        finally:
            result = request.get(X_CACHE, result)
            self.metrics.requests.labels(result).inc()
            self.metrics.latency.labels(result).observe(time.perf_counter() - started)

    async def _follow(self, request: web.Request, key: str) -> web.StreamResponse:
        """Lead or join the fetch of `key` and answer from it as its bytes arrive."""
        head_only = request.method == "HEAD"
        try:
            flight, reader, leader = self.flights.join(key)
        except TooManyReaders:
            return problem(503, "Too Many Waiters", head=head_only, headers={"Retry-After": "1"})
        request[X_CACHE] = "MISS" if leader else "COALESCED"
        if leader:
            task = asyncio.create_task(self._fetch(flight), name=f"fetch {key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            try:
                async with asyncio.timeout(self.settings.waiter_timeout):
                    head = await reader.head()
            except TimeoutError:
                return problem(504, "Upstream Timeout", head=head_only)
            except FetchFailed:
                return problem(502, "Bad Gateway", head=head_only)
            return await self._send(request, _FlightSource(reader, head), request[X_CACHE])
        finally:
            reader.close()

    async def _send(self, request: web.Request, source: _Source, result: str) -> web.StreamResponse:
        """Answer from `source`: 304, 206 or 416 when the request asks, else its own status."""
        headers = dict(source.headers)
        headers["X-Cache"] = result
        headers["Age"] = str(source.age)
        status, length, span = source.status, source.length, None
        if status == 200:
            etag, modified = headers.get("ETag"), parse_http_date(headers.get("Last-Modified"))
            if not_modified(request, etag, modified):
                kept = {k: v for k, v in headers.items() if k in NOT_MODIFIED_HEADERS}
                return web.Response(status=304, headers={**kept, "X-Cache": result, "Age": headers["Age"]})
            headers["Accept-Ranges"] = "bytes"
            # A range needs the size; an upstream that did not say it gets the whole object.
            if request.method == "GET" and length is not None and if_range_ok(request, etag, modified):
                try:
                    span = parse_range(request.headers.get("Range"), length)
                except Unsatisfiable:
                    return problem(
                        416,
                        "Range Not Satisfiable",
                        headers={
                            "Content-Range": f"bytes */{length}",
                            "X-Cache": result,
                            "Age": headers["Age"],
                        },
                    )
                if span is not None:
                    status = 206
                    headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{length}"
        resp = web.StreamResponse(status=status, headers=headers)
        if length is not None:
            resp.content_length = span[1] - span[0] if span else length
        await resp.prepare(request)
        if request.method != "HEAD":
            await self._stream(request, resp, source.chunks(*(span or (0, None))))
        return resp

    async def _stream(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        chunks: AsyncGenerator[bytes | memoryview, None],
    ) -> None:
        try:
            async for chunk in chunks:
                await resp.write(chunk)
                self.metrics.bytes_sent.inc(len(chunk))
        except FetchFailed:
            # The head is sent, so the status can't change: cut the connection so the client
            # knows the body is incomplete (a chunked body would otherwise end cleanly).
            if request.transport is not None:
                request.transport.close()
        except ConnectionResetError:
            pass  # the client left; the shared fetch goes on without it
        finally:
            await chunks.aclose()

    # -- the one upstream fetch per key -------------------------------------------------------

    async def _fetch(self, flight: InFlight) -> None:
        """Fetch `flight.key` upstream, feed its readers, and cache the result if we may."""
        origin = "-"
        try:
            try:
                resp, origin = await self.upstream.open("/" + flight.key)
            except UpstreamError as exc:
                status = 504 if exc.timed_out else 502
                await self._answer_locally(flight, status, str(exc))
                return
            async with resp:
                head = Head(
                    resp.status,
                    select_headers(resp.headers),
                    resp.content_length,
                    _age(resp.headers.get("Age")),
                )
                ttl = freshness(resp.headers)
                flight.start(head)
                limit = self.settings.max_object_bytes
                if head.length is not None and head.length > limit:
                    flight.stop_retaining()  # streamed through, never cached
                async for chunk in resp.content.iter_any():
                    await flight.append(chunk)
                    if flight.retaining and flight.size > limit:
                        flight.stop_retaining()
            if head.length is not None and flight.size != head.length:
                raise aiohttp.ClientPayloadError(f"{flight.size} of {head.length} bytes")
            flight.finish()
            # Same tick as finish() and forget(): a new request finds the flight or the entry.
            if head.status == 200 and flight.retaining and ttl > head.age:
                entry = Entry(200, head.headers, flight.body(), time.monotonic(), ttl, head.age)
                self.cache.put(flight.key, entry)
        except Abandoned:
            flight.fail(FetchFailed("abandoned"))
        except asyncio.CancelledError:
            flight.fail(FetchFailed("edge shutting down"))
            raise
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.metrics.upstream_errors.labels(origin).inc()
            log.warning(
                "upstream body failed", extra=fields(key=flight.key, upstream=origin, error=repr(exc))
            )
            flight.fail(exc)
        except Exception as exc:  # never leave readers hanging on a bug
            log.exception("fetch failed", extra=fields(key=flight.key))
            flight.fail(exc)
        finally:
            self.flights.forget(flight)

    @staticmethod
    async def _answer_locally(flight: InFlight, status: int, detail: str) -> None:
        """Every reader gets the same problem+json when no upstream answered."""
        resp = problem(status, "Bad Gateway" if status == 502 else "Gateway Timeout")
        body = resp.body if isinstance(resp.body, bytes) else b""
        flight.start(
            Head(
                status,
                (("Content-Type", "application/problem+json"), ("Cache-Control", "no-store")),
                len(body),
            )
        )
        await flight.append(body)
        flight.finish()
        log.warning("no upstream answered", extra=fields(key=flight.key, detail=detail))

    # -- small routes ---------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "status": "ok",
                "region": self.settings.region,
                "cache": {
                    "bytes": self.cache.bytes,
                    "objects": len(self.cache),
                    "max_bytes": self.cache.max_bytes,
                },
                "inflight": len(self.flights),
            }
        )


def _age(value: str | None) -> int:
    try:
        return max(0, int(value)) if value else 0
    except ValueError:
        return 0


async def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers=PREFLIGHT)


async def _defaults(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """CORS on everything, and X-Cache/Age even on answers the edge makes itself."""
    for name, value in CORS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("X-Cache", "MISS")
    response.headers.setdefault("Age", "0")


EDGE_KEY = web.AppKey("edge", Edge)


def make_app(
    region: str,
    origins: list[str],
    cache_bytes: int,
    shield: str | None = None,
    *,
    max_object_bytes: int | None = None,
    max_waiters: int = 10_000,
    waiter_timeout: float = 30.0,
    connect_timeout: float = 2.0,
    read_timeout: float = 10.0,
) -> web.Application:
    """The edge for `region`: fetches from `shield` when given, else from `origins` in order.

    Objects over `max_object_bytes` (default: an eighth of the cache, at most 64 MiB) are
    streamed through and not cached.
    """
    if max_object_bytes is None:
        max_object_bytes = min(cache_bytes // 8, 64 * 1024 * 1024)
    settings = Settings(
        region=region,
        upstreams=[shield] if shield else list(origins),
        cache_bytes=cache_bytes,
        max_object_bytes=max_object_bytes,
        max_waiters=max_waiters,
        waiter_timeout=waiter_timeout,
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
    )
    app = web.Application()
    edge = Edge(settings, metrics.install(app))
    app[EDGE_KEY] = edge
    app.cleanup_ctx.append(edge.lifecycle)
    app.router.add_get("/healthz", edge.healthz)
    app.router.add_route("OPTIONS", "/{path:.*}", _preflight)
    app.router.add_get("/{path:.*}", edge.handle)
    app.on_response_prepare.append(_defaults)
    return app
