"""The edge's own HTTP/1.1 front, for `reel edge`: an asyncio protocol on uvloop, parsed by llhttp.

Why not aiohttp's server: a cache hit is a dictionary lookup and one socket write, and aiohttp
spends several times that on each request (a request object, a handler task, a response object),
which caps an edge process at about half of nginx's hot-object rate. And a fetch with a thousand
waiters must reach every one of them within a few milliseconds of its first byte: here a waiter is
not a task but a callback on the fetch (`InFlight`), which writes to its socket as bytes arrive.

So a hit is answered inside `data_received`, with no task and no await; a miss subscribes the
connection to the fetch; /metrics and /purge, which may ask sibling workers, run in a task.
Everything a client can make the edge hold is bounded: the request head (`max_head`), a request
body (only /purge has one), requests queued behind a response (pipelining), and the bytes queued
for a slow reader (the transport's high-water mark; a response starts only once the previous one
is below it). Timeouts, checked by one clock tick a second: a request head must arrive within
`head_timeout`, an idle keep-alive connection goes after `keepalive_timeout`, a reader that takes
nothing for `send_timeout` is dropped, and a waiter gets 504 after the edge's `waiter_timeout`.
"""

from __future__ import annotations

import asyncio
import ctypes
import email.utils
import json
import logging
import signal
import socket
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from urllib.parse import parse_qs

import httptools
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from edge.app import EDGE_KEY
from edge.cache import Entry
from edge.http import RELAY_HEADER, Ask, Headers, Shape, key_of_target, local, shape
from edge.inflight import FetchFailed, Reader, TooManyReaders
from edge.node import MAX_PURGE_BODY, Edge
from reel import metrics
from reel.http import CORS, PREFLIGHT
from reel.logs import fields

log = logging.getLogger("reel.edge")
access = logging.getLogger("reel.edge.access")

_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_WANTED = {b"range", b"if-range", b"if-none-match", b"if-modified-since", b"cmcd-request",
           b"authorization", RELAY_HEADER.lower().encode(), b"content-length"}
_NO_BODY = (204, 304)
_RELAY = RELAY_HEADER.lower().encode()
# What every answer the edge makes itself carries (DESIGN.md: X-Cache and Age on everything).
_PLAIN = (*CORS.items(), ("X-Cache", "MISS"), ("Age", "0"))
SMALL = 16 * 1024  # bodies up to this go out in one write with their head (one syscall)
MAX_PIPELINE = 32  # requests parsed ahead of the response being sent; past it we stop reading
MAX_DISCARD = 64 * 1024  # body bytes tolerated (and dropped) on a GET or HEAD


class _Refuse(Exception):
    """The request is refused before it is complete: answer `status` and close."""

    def __init__(self, status: int, title: str) -> None:
        super().__init__(title)
        self.status, self.title = status, title


class Request:
    __slots__ = ("method", "target", "headers", "body", "keep_alive", "version", "started")

    def __init__(self) -> None:
        self.method = ""
        self.target = ""
        self.headers: dict[bytes, str] = {}
        self.body: bytearray | None = None
        self.keep_alive = True
        self.version = "1.1"
        self.started = 0.0


class Server:
    """One process's listening side: the protocol factory, its connections and their clock."""

    def __init__(
        self,
        edge: Edge,
        registry: CollectorRegistry,
        *,
        access_log: bool = False,
        high_water: int = 256 * 1024,
    ) -> None:
        self.edge, self.registry, self.access_log = edge, registry, access_log
        settings = edge.settings
        self.max_head, self.head_timeout = settings.max_head, settings.head_timeout
        self.keepalive_timeout, self.send_timeout = settings.keepalive_timeout, settings.send_timeout
        self.high_water = high_water
        self.connections: set[Connection] = set()
        self.date = b""
        self.trailers: tuple[bytes, bytes, bytes] = (b"", b"", b"")
        self._clock()
        self._emptied = asyncio.Event()

    def forget(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if not self.connections:
            self._emptied.set()

    def __call__(self) -> Connection:
        return Connection(self)

    def load(self) -> dict[str, int]:
        """What geo balances on: client connections open here, and those being answered now
        (this one, the health probe's, included)."""
        return {"connections": len(self.connections),
                "requests": sum(not conn.idle for conn in self.connections)}

    def _clock(self) -> None:
        self.date = b"Date: " + email.utils.formatdate(usegmt=True).encode() + b"\r\n"
        # What ends a head: kept alive (HTTP/1.1), closing, kept alive (HTTP/1.0). The same
        # objects all second, so heads memoized with them hash them once.
        self.trailers = (self.date + b"\r\n", self.date + b"Connection: close\r\n\r\n",
                         self.date + b"Connection: keep-alive\r\n\r\n")

    async def tick_forever(self) -> None:
        """Once a second: the Date header, and every connection's deadline."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self._clock()
            now = loop.time()
            for conn in [c for c in self.connections if c.deadline and c.deadline < now]:
                conn.expire()

    async def shutdown(self, grace: float = 5.0) -> None:
        """Close idle connections now; let responses in progress run for up to `grace` seconds."""
        self._emptied.clear()
        for conn in list(self.connections):
            conn.closing = True
            if conn.idle:
                conn.close()
        if self.connections:
            try:
                async with asyncio.timeout(grace):
                    await self._emptied.wait()
            except TimeoutError:
                for conn in list(self.connections):
                    conn.abort()


class Connection(asyncio.Protocol):
    """One client connection: requests parsed as they come, answered one at a time, in order."""

    def __init__(self, server: Server) -> None:
        self.server, self.edge = server, server.edge
        self.transport: asyncio.Transport | None = None
        self.deadline = 0.0  # loop time at which expire() is due; 0: none
        self.closing = False
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None
        self._head_bytes = 0
        self._queue: deque[Request | _Refuse] = deque()
        self._current: Request | None = None  # the request being answered
        self._paused = False  # the transport's buffer is over its high-water mark
        self._reading_paused = False
        self._broken = False  # the parser refused the stream: nothing more is read from it
        self._eof = False
        self._answering = False  # inside _next's loop
        # The response in progress, when it comes from a fetch (or a task).
        self._ask: Ask | None = None
        self._x_cache = "MISS"
        self._reader: Reader | None = None
        self._task: asyncio.Task[None] | None = None
        self._head_sent = False
        self._span: tuple[int, int | None] | None = None
        self._position = 0  # bytes of the source passed so far
        self._chunked = False
        self._sent = 0
        self._after_drain: Callable[[], None] | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        transport.set_write_buffer_limits(high=self.server.high_water)  # TCP_NODELAY: the loop's
        self.server.connections.add(self)
        self.deadline = self._loop.time() + self.server.head_timeout

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.deadline = 0.0
        if self._reader is not None:
            self._reader.close()  # the client left; the shared fetch goes on without it
            self._reader = None
        if self._task is not None:
            self._task.cancel()
        self._queue.clear()

    def data_received(self, data: bytes) -> None:
        if self._broken or self.transport is None:
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            refusal = exc.__context__
            self._refuse(refusal if isinstance(refusal, _Refuse) else _Refuse(400, "Bad Request"))
        except httptools.HttpParserUpgrade:
            # Upgrades (h2c, websocket) are not ours: answer what came, then close.
            for request in self._queue:
                if isinstance(request, Request):
                    request.keep_alive = False
            self._broken = True
            self._stop_reading()
        except httptools.HttpParserError:
            self._refuse(_Refuse(400, "Bad Request"))
        if len(self._queue) >= MAX_PIPELINE:
            self._stop_reading()
        self._next()

    def eof_received(self) -> bool:
        self._eof = True
        if self.idle:
            self.close()
        return True  # keep the transport to finish what was asked

    def pause_writing(self) -> None:
        self._paused = True
        self.deadline = self._loop.time() + self.server.send_timeout

    def resume_writing(self) -> None:
        self._paused = False
        self.deadline = 0.0
        if self._after_drain is not None:
            after, self._after_drain = self._after_drain, None
            after()
        elif self._reader is not None:
            self._pump()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.idle:
            self.deadline = self._loop.time() + self.server.head_timeout
        self._parsing = Request()
        self._parsing.started = time.perf_counter()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        assert self._parsing is not None
        self._parsing.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        name = name.lower()
        if name in _WANTED:
            assert self._parsing is not None
            self._parsing.headers[name] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self._parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        if request.method == "POST":
            length = request.headers.get(b"content-length", "0")
            if length.isdigit() and int(length) > MAX_PURGE_BODY:
                raise _Refuse(413, "Content Too Large")
            request.body = bytearray()

    def on_body(self, body: bytes) -> None:
        request = self._parsing
        assert request is not None
        if request.body is None:
            self._head_bytes += len(body)
            if self._head_bytes > self.server.max_head + MAX_DISCARD:
                raise _Refuse(413, "Content Too Large")
            return  # a GET with a body: dropped
        request.body += body
        if len(request.body) > MAX_PURGE_BODY:
            raise _Refuse(413, "Content Too Large")

    def on_message_complete(self) -> None:
        request, self._parsing = self._parsing, None
        assert request is not None
        self._queue.append(request)

    def _count(self, size: int) -> None:
        self._head_bytes += size
        if self._head_bytes > self.server.max_head:
            raise _Refuse(431, "Request Header Fields Too Large")

    # -- answering, one request at a time -----------------------------------------------------

    @property
    def idle(self) -> bool:
        return self._current is None and not self._queue and self._parsing is None

    def _next(self) -> None:
        """Answer queued requests while each is answered at once (hits), until one must wait."""
        if self._answering:
            return  # the loop below is on the stack and goes on by itself
        self._answering = True
        try:
            while self._current is None and self._queue and not self._paused and self.transport is not None:
                request = self._queue.popleft()
                if isinstance(request, _Refuse):
                    self._current = Request()
                    self._current.keep_alive = False
                    self._respond(local(request.status, request.title))
                else:
                    self._current = request
                    try:
                        self._dispatch(request)
                    except Exception:  # a bug of ours: log it, answer 500, never hang or leak it
                        log.exception("request failed", extra=fields(target=request.target[:200]))
                        self._drop_reader()
                        request.keep_alive = False
                        self._respond(local(500, "Internal Server Error"))
        finally:
            self._answering = False
        if self._current is None and self.transport is not None:
            if self._eof or self.closing:
                if not self._queue:
                    self.close()
                return
            if self._reading_paused and len(self._queue) < MAX_PIPELINE // 2:
                self._reading_paused = False
                self.transport.resume_reading()
            if self._parsing is None and not self._queue:
                self.deadline = self._loop.time() + self.server.keepalive_timeout

    def _dispatch(self, request: Request) -> None:
        method, target = request.method, request.target
        self.deadline = 0.0
        if method in ("GET", "HEAD"):
            path = target.partition("?")[0]
            if path == "/healthz":
                self._respond(_json(self.edge.health(self.server.load())))
            elif path == "/metrics":
                self._spawn(self._metrics(request))
            elif (key := key_of_target(target)) is not None:
                self._object(request, key)
            else:
                self._respond(local(404, "Not Found", head=method == "HEAD"))
        elif method == "OPTIONS":
            self._respond(Shape(204, [*PREFLIGHT.items(), *_PLAIN], body=b""))
        elif method == "POST" and target.partition("?")[0] == "/purge":
            self._spawn(self._purge(request))
        elif key_of_target(target) is not None:
            self._respond(local(405, "Method Not Allowed", extra=[("Allow", "GET, HEAD, OPTIONS")]))
        else:
            self._respond(local(404, "Not Found"))

    def _object(self, request: Request, key: str) -> None:
        headers = request.headers
        cmcd = headers.get(b"cmcd-request")
        if "CMCD=" in request.target:
            cmcd = _query_value(request.target, "CMCD") or cmcd
        ask = Ask(request.method, key, headers.get(b"range"), headers.get(b"if-range"),
                  headers.get(b"if-none-match"), headers.get(b"if-modified-since"), cmcd)
        try:
            x_cache, source = self.edge.answer(ask, self._pump, _RELAY in headers)
        except TooManyReaders:
            self._x_cache = "MISS"
            self._ask = ask
            self._respond(local(503, "Too Many Waiters", head=ask.method == "HEAD",
                                extra=[("Retry-After", "1")]))
            return
        self._ask, self._x_cache = ask, x_cache
        if isinstance(source, Entry):
            self._from_entry(ask, x_cache, source)
        else:
            self._reader = source
            self.deadline = self._loop.time() + self.edge.settings.waiter_timeout
            self._pump()

    def _from_entry(self, ask: Ask, x_cache: str, entry: Entry) -> None:
        age = int(entry.age(time.monotonic()))
        if ask.plain and entry.status == 200:
            # The common case: the same head for everyone but Age, X-Cache and Date.
            if entry.wire is None:
                stored = [*entry.headers, *CORS.items(), ("Accept-Ranges", "bytes")]
                entry.wire = _lines(stored) + b"Content-Length: %d\r\n" % len(entry.body)
            head = b"".join((_STATUS[200], entry.wire,
                             b"Age: %d\r\nX-Cache: %s\r\n" % (age, x_cache.encode()), self._trailer()))
            body = memoryview(entry.body) if ask.method == "GET" else None
            self._send_whole(head, body)
            return
        out = shape(ask, entry.status, entry.headers, len(entry.body), entry.etag, entry.modified,
                    x_cache, age)
        if out.body is not None or out.span is None:
            self._respond(out)
            return
        start, end = out.span
        self._send_whole(self._head(out), memoryview(entry.body)[start:end])

    def _pump(self) -> None:
        """Move what the fetch has to this client: the head once it is in, then the bytes.
        Called by the fetch on every change and by the transport when it drains; idempotent."""
        reader = self._reader
        if reader is None or self.transport is None:
            return
        ask = self._ask
        assert ask is not None
        if not self._head_sent:
            head = reader.flight.head
            if head is None:
                if reader.flight.error is not None:
                    self._drop_reader()
                    self._respond(local(502, "Bad Gateway", head=ask.method == "HEAD"))
                return
            self.deadline = 0.0
            x_cache = self._x_cache = head.x_cache or self._x_cache
            if head.length is not None and ask.method == "GET" and ask.plain:
                # The common case, a thousand times over when a burst waits on one fetch: every
                # plain GET of it with the same trailer gets the same bytes, built once.
                trailer = self._trailer()
                whole = head.wire.get((x_cache, trailer))
                if whole is None:
                    out = shape(ask, head.status, head.headers, head.length, head.etag, head.modified,
                                x_cache, head.age)
                    whole = head.wire[(x_cache, trailer)] = self._head(out, framing=False) + trailer
                self._span = (0, None)
            else:
                out = shape(ask, head.status, head.headers, head.length, head.etag, head.modified,
                            x_cache, head.age)
                if out.body is not None or out.span is None:
                    self._drop_reader()
                    self._respond(out)
                    return
                request = self._current
                assert request is not None
                if out.length is None:  # the upstream did not say: chunked, or the close ends the body
                    self._chunked = request.version == "1.1"
                    request.keep_alive = request.keep_alive and self._chunked
                chunked = b"Transfer-Encoding: chunked\r\n" if self._chunked else b""
                self._span = out.span
                whole = self._head(out, framing=False) + chunked + self._trailer()
            self.transport.write(whole)
            self._head_sent = True
        start, end = self._span or (0, None)
        while not self._paused:
            try:
                chunk = reader.take()
            except FetchFailed:
                # The head is sent, so the status can't change: cut the connection so the client
                # knows the body is incomplete (a chunked body would otherwise end cleanly).
                self.abort()
                return
            if chunk is None:
                if reader.finished:
                    self._end_body()
                return
            size = len(chunk)
            lo, hi = max(start - self._position, 0), size if end is None else min(size, end - self._position)
            self._position += size
            if hi > lo:
                piece = chunk if (lo == 0 and hi == size) else memoryview(chunk)[lo:hi]
                if self._chunked:
                    self.transport.writelines((b"%x\r\n" % (hi - lo), piece, b"\r\n"))
                else:
                    self.transport.write(piece)
                self._sent += hi - lo
            if end is not None and self._position >= end:
                self._end_body()
                return

    def _end_body(self) -> None:
        if self._chunked and self.transport is not None:
            self.transport.write(b"0\r\n\r\n")
        self._drop_reader()
        self._done()

    def _drop_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    # -- writing --------------------------------------------------------------------------------

    def _trailer(self) -> bytes:
        """Date, Connection when needed, and the blank line that ends a head."""
        request = self._current
        trailers = self.server.trailers
        if request is None or not request.keep_alive or self.closing:
            return trailers[1]
        return trailers[2] if request.version == "1.0" else trailers[0]

    def _head(self, out: Shape, framing: bool = True) -> bytes:
        lines = _STATUS.get(out.status) or f"HTTP/1.1 {out.status} Unknown\r\n".encode()
        head = lines + _lines(out.headers)
        if out.length is not None and out.status not in _NO_BODY:
            head += b"Content-Length: %d\r\n" % out.length
        return head + self._trailer() if framing else head

    def _respond(self, out: Shape) -> None:
        """A response whose body is at hand (a local answer, a 304, a HEAD)."""
        body = out.body if out.body and self._current is not None and self._current.method != "HEAD" else None
        self._send_whole(self._head(out), memoryview(body) if body else None)

    def _send_whole(self, head: bytes, body: memoryview | None) -> None:
        transport = self.transport
        if transport is None:
            return
        if body is None or not len(body):
            transport.write(head)
        elif len(body) <= SMALL:
            transport.write(head + body)
        else:
            transport.writelines((head, body))
        self._sent += len(body) if body is not None else 0
        self._done()

    def _done(self) -> None:
        """The response is handed to the transport: account for it, then the next request."""
        request = self._current
        if request is None:
            return
        if self._ask is not None:
            elapsed = time.perf_counter() - request.started
            self.edge.stats.served(self._x_cache, elapsed, self._sent)
        if self.server.access_log:
            access.info("access", extra=fields(method=request.method, path=request.target.partition("?")[0],
                                               x_cache=self._x_cache if self._ask else None, bytes=self._sent,
                                               ms=round((time.perf_counter() - request.started) * 1000, 2)))
        self._current, self._ask, self._task = None, None, None
        self._head_sent, self._span, self._position, self._chunked, self._sent = False, None, 0, False, 0
        if not request.keep_alive:
            self.closing = True
        if self._paused:
            self._after_drain = self._next  # a slow reader holds at most one response
        else:
            self._next()

    def _spawn(self, coro) -> None:
        self._task = self._loop.create_task(coro)

    def _refuse(self, refusal: _Refuse) -> None:
        self._parsing = None
        self._broken = True
        self._queue.append(refusal)
        self._stop_reading()

    def _stop_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def expire(self) -> None:
        """The deadline passed: what that means depends on what the connection is doing."""
        timeouts = self.edge.stats.timeouts
        if self._reader is not None and not self._head_sent:
            timeouts["wait"] += 1
            self._drop_reader()
            head_only = self._ask is not None and self._ask.method == "HEAD"
            self._respond(local(504, "Upstream Timeout", head=head_only))
        elif self._paused:
            timeouts["send"] += 1
            self.abort()  # a reader that stopped reading
        elif self._parsing is not None and self._current is None:
            timeouts["head"] += 1
            self._refuse(_Refuse(408, "Request Timeout"))
            self._next()
        else:
            timeouts["idle"] += 1
            self.close()  # an idle keep-alive connection

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- routes that await ----------------------------------------------------------------------

    async def _metrics(self, request: Request) -> None:
        text = generate_latest(self.server.registry).decode()
        text = await self.edge.metrics(text, _RELAY in request.headers)
        body = text.encode()
        self._respond(Shape(200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), *_PLAIN],
                            body=body))

    async def _purge(self, request: Request) -> None:
        refused = self.edge.authorize(request.headers.get(b"authorization"))
        if refused == 403:
            self._respond(local(403, "Purge Disabled", detail="this edge has no purge token"))
            return
        if refused == 401:
            self._respond(local(401, "Unauthorized", extra=[("WWW-Authenticate", 'Bearer realm="purge"')]))
            return
        try:
            purged = await self.edge.purge(bytes(request.body or b""), _RELAY in request.headers)
        except ValueError as exc:
            self._respond(local(400, "Bad Purge Request", detail=str(exc)))
            return
        self._respond(_json({"purged": purged}))


def _lines(headers: Headers | tuple[tuple[str, str], ...]) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("utf-8", "surrogateescape")


def _json(doc: object) -> Shape:
    return Shape(200, [("Content-Type", "application/json"), *_PLAIN], body=json.dumps(doc).encode())


def _query_value(target: str, name: str) -> str | None:
    values = parse_qs(target.partition("?")[2], max_num_fields=32).get(name)
    return values[0] if values else None


# -- running --------------------------------------------------------------------------------------


async def run(
    app: web.Application,
    host: str | None,
    port: int,
    *,
    reuse_port: bool = False,
    sockets: tuple[socket.socket, ...] = (),
    access_log: bool = False,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the edge of `app` (from make_app) on host:port (unless host is None) and on
    `sockets`, until `stop` is set (by default: until SIGINT or SIGTERM)."""
    edge = app[EDGE_KEY]
    server = Server(edge, app[metrics.REGISTRY_KEY], access_log=access_log)
    loop = asyncio.get_running_loop()
    await edge.start()
    listeners: list[asyncio.Server] = []
    try:
        if host is not None:
            try:
                listeners.append(await loop.create_server(server, host, port, reuse_port=reuse_port,
                                                          backlog=4096))
            except OSError as exc:
                raise SystemExit(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            log.info("listening", extra=fields(url=f"http://{host}:{port}"))
        for sock in sockets:
            listeners.append(await loop.create_server(server, sock=sock, backlog=1024))
        ticker = loop.create_task(server.tick_forever())
        if stop is None:
            stop = asyncio.Event()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        for listener in listeners:
            listener.close()
        try:
            await server.shutdown()
        except TimeoutError:
            pass
        ticker.cancel()
    finally:
        for listener in listeners:
            listener.close()
        await edge.close()


def serve(app: web.Application, host: str, port: int, **kw: object) -> None:
    """Run the edge of `app` on uvloop until SIGINT/SIGTERM."""
    _fixed_mmap_threshold()
    uvloop.run(run(app, host, port, **kw))  # type: ignore[arg-type]


def _fixed_mmap_threshold(size: int = 128 * 1024) -> None:
    """Make glibc give every allocation of `size` or more its own mapping, returned on free.

    By default glibc raises that threshold each time such a block is freed, after which cached
    bodies come from the heap, and evicting them leaves holes that RSS keeps: a full 64 MiB cache
    then cost 80 MiB over the idle process instead of the 61 it costs with a fixed threshold.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return  # not glibc: its allocator is its own business
    libc.mallopt(-3, size)  # M_MMAP_THRESHOLD
