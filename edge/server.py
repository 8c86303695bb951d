"""The edge's own HTTP/1.1 front, for `reel edge`: an asyncio protocol on uvloop, parsed by llhttp.

Why not aiohttp's server: a cache hit is a dictionary lookup and one socket write, and aiohttp
spends several times that on each request (a request object, a handler task, a response object),
which caps an edge process at about half of nginx's hot-object rate. And a fetch with a thousand
waiters must reach every one of them within a few milliseconds of its first byte: here a waiter is
not a task but a callback on the fetch's stream, which writes to its socket as bytes arrive.

Three parts. A `Connection` parses requests as they come, queues them (pipelining), answers them
one at a time, in order, and applies flow control both ways. Each request's answer is a small
object of its own, made when its turn comes and dropped once handed to the transport: `FromCache`
(a cached entry, sent at once, inside `data_received`: no task, no await), `FromFlight` (follows
a fetch in progress, subscribed to its stream) or `Local` (an answer the edge makes itself;
`Routed` for /metrics and /purge, which may ask sibling workers and so run in a task).
Everything a client can make the edge hold is bounded: the request head (`max_head`), a request
body (only /purge has one), requests queued behind a response (`MAX_PIPELINE`), and the bytes
queued for a slow reader (the transport's high-water mark; a response starts only once the
previous one is below it). A connection runs at most one `Timer` at a time, named for what it
waits for (a request head, the next request on an idle keep-alive connection, an upstream's
head for a waiter, a client that stopped reading), checked by one clock tick a second.
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
from collections.abc import Callable, Coroutine
from enum import StrEnum
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

import httptools
import uvloop
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from edge import api as api_path
from edge.app import API_KEY, EDGE_KEY
from edge.cache import Entry
from edge.http import (
    RELAY_HEADER,
    Ask,
    Headers,
    Shape,
    XCache,
    key_of_target,
    local,
    refusal,
    shape,
    split_target,
)
from edge.inflight import Cursor, FetchFailed, Stream, TooManyReaders
from edge.node import MAX_PURGE_BODY, Edge
from reel import metrics
from reel.http import CORS, PREFLIGHT
from reel.logs import fields
from reel.playback_token import redact
from reel.viewers import HEADER as VIEWERS_HEADER

log = logging.getLogger("reel.edge")
access = logging.getLogger("reel.edge.access")

_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}
_WANTED = {b"range", b"if-range", b"if-none-match", b"if-modified-since", b"cmcd-request",
           b"authorization", RELAY_HEADER.lower().encode(), b"content-length",
           b"user-agent", b"cmcd-session", VIEWERS_HEADER.lower().encode()}
_VIEWERS = VIEWERS_HEADER.lower().encode()
_NO_BODY = (204, 304)
_RELAY = RELAY_HEADER.lower().encode()
# What every answer the edge makes itself carries (DESIGN.md: X-Cache and Age on everything).
_PLAIN = (*CORS.items(), ("X-Cache", XCache.MISS), ("Age", "0"))
SMALL = 16 * 1024  # bodies up to this go out in one write with their head (one syscall)
MAX_PIPELINE = 32  # requests parsed ahead of the response being sent; past it we stop reading
MAX_DISCARD = 64 * 1024  # body bytes tolerated (and dropped) on a GET or HEAD
# Seconds a refused client's further bytes are read and dropped after its answer and our FIN, so
# the close does not reset the connection over an answer it has not read yet (nginx's lingering
# close): unread bytes at close() make the kernel send RST.
LINGER = 2.0
_ALLOW = "GET, HEAD, OPTIONS"


class _Refuse(Exception):
    """The request is refused before it is complete: answer `status` and close."""

    def __init__(self, status: int, title: str) -> None:
        super().__init__(title)
        self.status, self.title = status, title


class Request:
    """What the front keeps of one parsed request."""

    __slots__ = ("method", "target", "headers", "body", "keep_alive", "version", "started", "passed")

    def __init__(self, keep_alive: bool = True) -> None:
        self.method = ""
        self.target = ""
        self.headers: dict[bytes, str] = {}
        # An /api/v1/ request keeps every header (control may need any of them), as sent.
        self.passed: list[tuple[str, str]] | None = None
        self.body: bytearray | None = None
        self.keep_alive = keep_alive
        self.version = "1.1"
        self.started = 0.0


class Timer(StrEnum):
    """What a connection is waiting for, and so which of its clocks runs (one at a time)."""

    HEAD = "head"  # the rest of a request head: head_timeout
    IDLE = "idle"  # a next request on a kept-alive connection: keepalive_timeout
    WAIT = "wait"  # an upstream's response head, for a waiter: the edge's waiter_timeout
    SEND = "send"  # a client that stopped reading what is queued for it: send_timeout


class Server:
    """One process's listening side: the protocol factory, its connections and their clock."""

    def __init__(
        self,
        edge: Edge,
        registry: CollectorRegistry,
        *,
        access_log: bool = False,
        high_water: int = 256 * 1024,
        api: api_path.ApiEdge | None = None,
    ) -> None:
        self.edge, self.registry, self.access_log = edge, registry, access_log
        self.api = api  # /api/v1/ goes to control through it, when the edge has one
        settings = edge.settings
        self.max_head = settings.max_head
        self.timeouts = {Timer.HEAD: settings.head_timeout, Timer.IDLE: settings.keepalive_timeout,
                         Timer.WAIT: settings.waiter_timeout, Timer.SEND: settings.send_timeout}
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
        """Once a second: the Date header, and every connection's timer."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(1.0)
            self._clock()
            now = loop.time()
            for conn in [c for c in self.connections if c.timer is not None and c.due < now]:
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
        self.timer: Timer | None = None  # what the connection waits for, if it has a limit
        self.due = 0.0  # loop time at which `timer` runs out
        self.closing = False
        self.paused = False  # the transport's buffer is over its high-water mark
        self.response: Response | None = None  # the request being answered
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpRequestParser(self)
        self._parsing: Request | None = None
        self._head_bytes = 0
        self._queue: deque[Request | _Refuse] = deque()
        self._reading_paused = False
        self._broken = False  # the parser refused the stream: nothing more is read from it
        self._lingering = False  # closing after a refusal: the answer is sent, input is dropped
        self._eof = False
        self._answering = False  # inside _next's loop
        self._after_drain: Callable[[], None] | None = None

    # -- timers ---------------------------------------------------------------------------------

    def arm(self, timer: Timer) -> None:
        self.timer, self.due = timer, self._loop.time() + self.server.timeouts[timer]

    def disarm(self, timer: Timer | None = None) -> None:
        """Stop `timer` (any, if None)."""
        if timer is None or self.timer is timer:
            self.timer = None

    def expire(self) -> None:
        """The running timer ran out: what to do is what it was waiting for."""
        timer, self.timer = self.timer, None
        if timer is None:
            return
        self.edge.stats.timeouts[timer] += 1
        if timer is Timer.WAIT:
            if self.response is not None:
                self.response.expire()
        elif timer is Timer.HEAD:
            self._refuse(_Refuse(408, "Request Timeout"))
            self._next()
        elif timer is Timer.SEND:
            self.abort()  # a reader that stopped reading
        else:
            self.close()  # an idle keep-alive connection

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport
        transport.set_write_buffer_limits(high=self.server.high_water)  # TCP_NODELAY: the loop's
        self.server.connections.add(self)
        self.arm(Timer.HEAD)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.forget(self)
        self.transport = None
        self.disarm()
        if self.response is not None:
            self.response.close()  # a shared fetch goes on without this client
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
        self.paused = True
        self.arm(Timer.SEND)

    def resume_writing(self) -> None:
        self.paused = False
        self.disarm(Timer.SEND)
        if self._after_drain is not None:
            after, self._after_drain = self._after_drain, None
            after()
        elif self.response is not None:
            self.response.resume()

    # -- httptools callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.idle:
            self.arm(Timer.HEAD)
        self._parsing = Request()
        self._parsing.started = time.perf_counter()
        self._head_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        assert self._parsing is not None
        self._parsing.target += url.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        request = self._parsing
        assert request is not None
        if request.passed is None and self.server.api is not None and api_path.is_api(request.target):
            request.passed = []
        if request.passed is not None:
            text = value.decode("latin-1")
            request.passed.append((name.decode("latin-1"), text))
            request.headers[name.lower()] = text
            return
        name = name.lower()
        if name in _WANTED:
            request.headers[name] = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        request = self._parsing
        assert request is not None
        parser = self._parser
        request.method = parser.get_method().decode("latin-1")
        request.version = parser.get_http_version()
        request.keep_alive = parser.should_keep_alive()
        if request.method == "POST" or (request.passed is not None and request.method not in ("GET", "HEAD")):
            length = request.headers.get(b"content-length", "0")
            if length.isdigit() and int(length) > MAX_PURGE_BODY:
                raise _Refuse(413, "Content Too Large")
            request.body = bytearray()
            if (request.headers.get(b"expect", "").lower() == "100-continue" and self.idle_but_parsing
                    and self.transport is not None):
                self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # the body is wanted

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
    def idle_but_parsing(self) -> bool:
        """Nothing is being answered or waits: an interim answer now is this request's."""
        return self.response is None and not self._answering and not self._queue

    @property
    def idle(self) -> bool:
        return self.response is None and not self._answering and not self._queue and self._parsing is None

    def _next(self) -> None:
        """Answer queued requests while each is answered at once (hits), until one must wait."""
        if self._answering:
            return  # the loop below is on the stack and goes on by itself
        self._answering = True
        try:
            while self.response is None and self._queue and not self.paused and self.transport is not None:
                self._answer(self._queue.popleft())
        finally:
            self._answering = False
        if self.response is None and self.transport is not None:
            self._between_requests()

    def _answer(self, item: Request | _Refuse) -> None:
        self.timer = None  # whatever the connection waited for has come
        request = item if isinstance(item, Request) else Request(keep_alive=False)
        try:
            if isinstance(item, _Refuse):
                self.response = Local(self, request, local(item.status, item.title))
            else:
                self.response = self._route(request)
            self.response.start()
        except Exception:  # a bug of ours: log it, answer 500, never hang or leak it
            log.exception("request failed", extra=fields(target=request.target[:200]))
            if self.response is not None:
                self.response.close()
            request.keep_alive = False
            self.response = Local(self, request, local(500, "Internal Server Error"))
            self.response.start()

    def _between_requests(self) -> None:
        """Nothing is being answered: close if asked to, read again, and start the idle clock."""
        assert self.transport is not None
        if self._eof or self.closing:
            if not self._queue:
                self.close()
            return
        if self._reading_paused and len(self._queue) < MAX_PIPELINE // 2:
            self._reading_paused = False
            self.transport.resume_reading()
        if self._parsing is None and not self._queue:
            self.arm(Timer.IDLE)

    def _route(self, request: Request) -> Response:
        method, path = request.method, request.target.partition("?")[0]
        if request.passed is not None:
            return self._api(request)
        if method in ("GET", "HEAD"):
            if path == "/healthz":
                return Local(self, request, _json(self.edge.health(self.server.load())))
            if path == "/metrics":
                return Routed(self, request, self._metrics)
            key, token = split_target(request.target)
            if key is not None:
                return self._object(request, key, token)
            return Local(self, request, local(404, "Not Found", head=method == "HEAD"))
        if method == "OPTIONS":
            return Local(self, request, Shape(204, [*PREFLIGHT.items(), *_PLAIN], body=b""))
        if method == "POST" and path == "/purge":
            return Routed(self, request, self._purge)
        if key_of_target(request.target) is not None:
            return Local(self, request, local(405, "Method Not Allowed", extra=[("Allow", _ALLOW)]))
        return Local(self, request, local(404, "Not Found"))

    def _object(self, request: Request, key: str, token: str | None) -> Response:
        headers = request.headers
        cmcd = headers.get(b"cmcd-request")
        if "CMCD=" in request.target:
            cmcd = _query_value(request.target, "CMCD") or cmcd
        if key.startswith("live/"):  # who watches (reel.viewers), told upstream
            self.edge.viewers.request(key, f"{cmcd or ''},{headers.get(b'cmcd-session', '')}",
                                      self.peer(), headers.get(b"user-agent"), headers.get(_VIEWERS))
        ask = Ask(request.method, key, headers.get(b"range"), headers.get(b"if-range"),
                  headers.get(b"if-none-match"), headers.get(b"if-modified-since"), cmcd, token)
        if token is not None and not self.edge.admits(ask, self.peer()):
            return Local(self, request, refusal(ask.method == "HEAD"), XCache.MISS)
        x_cache, source = self.edge.answer(ask)
        if isinstance(source, Entry):
            if source.guarded and token is None:
                return Local(self, request, refusal(ask.method == "HEAD"), x_cache)
            return FromCache(self, request, x_cache, ask, source)
        try:
            return FromFlight(self, request, x_cache, ask, source, sibling=_RELAY in headers)
        except TooManyReaders:
            return Local(self, request, self.edge.too_many_waiters(ask.method == "HEAD"), XCache.MISS)

    def _api(self, request: Request) -> Response:
        """/api/v1/: shared reads from the API cache (or its one fetch), the rest passed through."""
        api, headers, method = self.server.api, request.headers, request.method
        assert api is not None
        if len(request.target) > api_path.MAX_TARGET:
            return Local(self, request, local(414, "URI Too Long", head=method == "HEAD"))
        if not api_path.shared(method, headers):
            return ApiFlight(self, request, XCache.MISS, Ask(method, request.target[1:]),
                             self._pass(request, api.forwarded_for(headers, self.peer())), sibling=False)
        ask = Ask(method, request.target[1:], if_none_match=headers.get(b"if-none-match"),
                  if_modified_since=headers.get(b"if-modified-since"))
        x_cache, source = api.answer_for(ask, lambda: api.forwarded_for(headers, self.peer()))
        if isinstance(source, Entry):
            return ApiFromCache(self, request, x_cache, ask, source)
        try:
            return ApiFlight(self, request, x_cache, ask, source, sibling=_RELAY in headers)
        except TooManyReaders:
            out = local(503, "Too Many Waiters", head=method == "HEAD", extra=[("Retry-After", "1")])
            return Local(self, request, out, XCache.MISS)

    def _pass(self, request: Request, forwarded: str) -> Stream:
        assert self.server.api is not None and request.passed is not None
        body = bytes(request.body) if request.body is not None else None
        return self.server.api.pass_through(request.method, request.target, request.passed, body, forwarded)

    def finished(self, response: Response) -> None:
        """`response` is handed to the transport: account for it, then the next request."""
        request = response.request
        if response.x_cache is not None:
            stats = self.server.api.stats if response.api and self.server.api else self.edge.stats
            stats.served(response.x_cache, time.perf_counter() - request.started, response.sent)
        if self.server.access_log:
            access.info("access", extra=fields(  # the path without its playback token
                method=request.method, path=redact(request.target.partition("?")[0]),
                x_cache=response.x_cache,
                bytes=response.sent, ms=round((time.perf_counter() - request.started) * 1000, 2)))
        self.response = None
        if not request.keep_alive:
            self.closing = True
        if self.paused:
            self._after_drain = self._next  # a slow reader holds at most one response
        else:
            self._next()

    # -- writing --------------------------------------------------------------------------------

    def trailer(self, request: Request) -> bytes:
        """Date, Connection when needed, and the blank line that ends a head."""
        trailers = self.server.trailers
        if not request.keep_alive or self.closing:
            return trailers[1]
        return trailers[2] if request.version == "1.0" else trailers[0]

    def send_whole(self, head: bytes, body: memoryview | None) -> int:
        """Write a head and a body at hand; the body's length."""
        transport = self.transport
        if transport is None:
            return 0
        if body is None or not len(body):
            transport.write(head)
            return 0
        if len(body) <= SMALL:
            transport.write(head + body)
        else:
            transport.writelines((head, body))  # the body is not copied
        return len(body)

    def _refuse(self, refusal: _Refuse) -> None:
        self._parsing = None
        self._broken = True
        self._queue.append(refusal)
        self._stop_reading()

    def peer(self) -> str | None:
        """The client's address (for tokens bound to one)."""
        peername = self.transport.get_extra_info("peername") if self.transport is not None else None
        return peername[0] if isinstance(peername, tuple) else None

    def _stop_reading(self) -> None:
        if not self._reading_paused and self.transport is not None:
            self._reading_paused = True
            self.transport.pause_reading()

    def close(self) -> None:
        transport = self.transport
        if transport is None:
            return
        if self._broken and not self._lingering and transport.can_write_eof():
            self._lingering = True
            transport.write_eof()  # the answer, then FIN; what the client still sends is dropped
            transport.resume_reading()
            asyncio.get_running_loop().call_later(LINGER, self.abort)
            return
        transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    # -- routes that await ----------------------------------------------------------------------

    async def _metrics(self, request: Request) -> Shape:
        text = generate_latest(self.server.registry).decode()
        text = await self.edge.metrics(text, _RELAY in request.headers)
        return Shape(200, [("Content-Type", "text/plain; version=0.0.4; charset=utf-8"), *_PLAIN],
                     body=text.encode())

    async def _purge(self, request: Request) -> Shape:
        refused = self.edge.authorize(request.headers.get(b"authorization"))
        if refused == 403:
            return local(403, "Purge Disabled", detail="this edge has no purge token")
        if refused == 401:
            return local(401, "Unauthorized", extra=[("WWW-Authenticate", 'Bearer realm="purge"')])
        try:
            body = bytes(request.body or b"")
            purged = await self.edge.purge(body, _RELAY in request.headers)
            if self.server.api is not None:
                purged += self.server.api.forget(body)
        except ValueError as exc:
            return local(400, "Bad Purge Request", detail=str(exc))
        return _json({"purged": purged})


# -- responses: one per request, made when its turn comes ------------------------------------------


class Response:
    """One request's answer. `x_cache` is None for anything but an object (not counted as one);
    `sent` counts body bytes handed to the transport."""

    __slots__ = ("conn", "request", "x_cache", "sent")
    api = False  # an /api/v1/ answer: counted in the API's metrics

    def __init__(self, conn: Connection, request: Request, x_cache: XCache | None = None) -> None:
        self.conn, self.request, self.x_cache = conn, request, x_cache
        self.sent = 0

    def start(self) -> None:
        """Send what there is to send; call conn.finished(self) once it is all handed over."""
        raise NotImplementedError

    def resume(self) -> None:
        """The transport drained below its high-water mark."""

    def expire(self) -> None:
        """Its wait for an upstream ran out."""

    def close(self) -> None:
        """The connection is gone, or the response is abandoned: let go of what it holds."""

    def send(self, out: Shape) -> None:
        """Answer with a response whose body is at hand, and be done."""
        body = out.body if out.body and self.request.method != "HEAD" else None
        self.sent += self.conn.send_whole(_head(out, self.conn.trailer(self.request)),
                                          memoryview(body) if body else None)
        self.conn.finished(self)


class Local(Response):
    """An answer the edge makes itself: a problem, /healthz, a preflight."""

    __slots__ = ("out",)

    def __init__(self, conn: Connection, request: Request, out: Shape, x_cache: XCache | None = None) -> None:
        super().__init__(conn, request, x_cache)
        self.out = out

    def start(self) -> None:
        self.send(self.out)


class Routed(Response):
    """An answer that awaits (/metrics and /purge may ask sibling workers): it runs in a task."""

    __slots__ = ("make", "task")

    def __init__(self, conn: Connection, request: Request,
                 make: Callable[[Request], Coroutine[Any, Any, Shape]]) -> None:
        super().__init__(conn, request)
        self.make = make
        self.task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            out = await self.make(self.request)
        except Exception:  # a bug of ours: log it, answer 500, never hang
            log.exception("request failed", extra=fields(target=self.request.target[:200]))
            self.request.keep_alive = False
            out = local(500, "Internal Server Error")
        self.send(out)

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class FromCache(Response):
    """A cached entry: the whole answer at once, with no task and no await."""

    __slots__ = ("ask", "entry")

    def __init__(self, conn: Connection, request: Request, x_cache: XCache, ask: Ask, entry: Entry) -> None:
        super().__init__(conn, request, x_cache)
        self.ask, self.entry = ask, entry

    def start(self) -> None:
        ask, entry, x_cache = self.ask, self.entry, self.x_cache
        assert x_cache is not None
        age = int(entry.age(time.monotonic()))
        if ask.plain and entry.status == 200:
            self._send_plain(age, x_cache)
            return
        out = shape(ask, entry, len(entry.body), x_cache, age)
        if out.body is not None or out.span is None:
            self.send(out)
            return
        start, end = out.span
        self.sent = self.conn.send_whole(_head(out, self.conn.trailer(self.request)),
                                         memoryview(entry.body)[start:end])
        self.conn.finished(self)

    def _send_plain(self, age: int, x_cache: XCache) -> None:
        """The common case: every plain GET or HEAD of the entry in the same second (Age and
        Date change by the second) gets the same head, built once."""
        entry, trailer = self.entry, self.conn.trailer(self.request)
        head = entry.wire.get((age, x_cache, trailer))
        if head is None:
            if len(entry.wire) >= 16:
                entry.wire.clear()  # the heads of seconds gone by
            stored = [*entry.headers, *CORS.items(), ("Accept-Ranges", "bytes"), ("X-Cache", x_cache)]
            head = entry.wire[(age, x_cache, trailer)] = b"".join((
                _STATUS[200], _lines(stored),
                b"Content-Length: %d\r\nAge: %d\r\n" % (len(entry.body), age), trailer))
        self.sent = self.conn.send_whole(head, memoryview(entry.body) if self.ask.method == "GET" else None)
        self.conn.finished(self)


class FromFlight(Response):
    """A follower of a fetch in progress: its head once it is in, then its bytes as they arrive,
    at the pace the client reads them. Raises TooManyReaders when the fetch has enough."""

    __slots__ = ("ask", "plain", "cursor", "head_sent", "span", "position", "chunked")

    def __init__(self, conn: Connection, request: Request, x_cache: XCache, ask: Ask, stream: Stream,
                 sibling: bool) -> None:
        super().__init__(conn, request, x_cache)
        self.ask = ask
        self.plain = ask.method == "GET" and ask.plain  # decided now, not when a thousand wait
        # A sibling worker's request is served first: it has clients of its own waiting.
        self.cursor: Cursor | None = stream.cursor(self.pump, first=sibling)
        self.head_sent = False
        self.span: tuple[int, int | None] = (0, None)
        self.position = 0  # bytes of the stream passed so far
        self.chunked = False

    def start(self) -> None:
        self.conn.arm(Timer.WAIT)
        self.pump()

    def resume(self) -> None:
        self.pump()

    def pump(self) -> None:
        """Move what the stream has to the client: the head once it is in, then the bytes, as
        far as the client takes them. Called by the stream on every change and by the transport
        when it drains; idempotent."""
        cursor, transport = self.cursor, self.conn.transport
        if cursor is None or transport is None or not (self.head_sent or self._send_head(cursor.stream)):
            return
        start, end = self.span
        stream = cursor.stream
        while not self.conn.paused:
            try:
                chunk = stream.take(cursor)
            except FetchFailed:
                # The head is sent, so the status can't change: cut the connection so the client
                # knows the body is incomplete (a chunked body would otherwise end cleanly).
                self.conn.abort()
                return
            if chunk is None:
                return  # the rest is not in yet
            size = len(chunk)
            lo, hi = max(start - self.position, 0), size if end is None else min(size, end - self.position)
            self.position += size
            if hi > lo:
                piece = chunk if (lo == 0 and hi == size) else memoryview(chunk)[lo:hi]
                if self.chunked:
                    transport.writelines((b"%x\r\n" % (hi - lo), piece, b"\r\n"))
                else:
                    transport.write(piece)
                self.sent += hi - lo
            if not chunk or (end is not None and self.position >= end):
                self._end()
                return

    def expire(self) -> None:
        if not self.head_sent:
            self.close()
            self.send(local(504, "Upstream Timeout", head=self.ask.method == "HEAD"))

    def close(self) -> None:
        if self.cursor is not None:
            self.cursor.close()
            self.cursor = None

    def _send_head(self, stream: Stream) -> bool:
        """Write the response head if it is in; False when there is no body to follow it."""
        head = stream.head
        if head is None:
            if stream.error is not None:
                self.close()
                self.send(local(502, "Bad Gateway", head=self.ask.method == "HEAD"))
            return False
        conn = self.conn
        conn.disarm(Timer.WAIT)
        x_cache = self.x_cache = head.x_cache_for(self.x_cache)
        if head.guarded and self.ask.token is None:
            self.close()
            self.send(refusal(self.ask.method == "HEAD"))
            return False
        if self.plain and head.length is not None:
            # The common case, a thousand times over when a burst waits on one fetch: every
            # plain GET of it with the same trailer gets the same bytes, built once.
            trailer = conn.trailer(self.request)
            wire = head.wire.get((x_cache, trailer))
            if wire is None:
                out = shape(self.ask, head, head.length, x_cache, head.age)
                wire = head.wire[(x_cache, trailer)] = _head(out, trailer)
        else:
            out = shape(self.ask, head, head.length, self.x_cache, head.age)
            if out.body is not None or out.span is None:  # a 304, a 416, a HEAD: nothing to follow
                self.close()
                self.send(out)
                return False
            wire = self._own_head(out)
        assert conn.transport is not None
        conn.transport.write(wire)
        self.head_sent = True
        return True

    def _own_head(self, out: Shape) -> bytes:
        """A head for this request alone (a range, a conditional, no length from upstream)."""
        assert out.span is not None
        self.span = out.span
        request = self.request
        if out.length is None:  # the upstream did not say: chunked, or the close ends the body
            self.chunked = request.version == "1.1"
            request.keep_alive = request.keep_alive and self.chunked
        framing = b"Transfer-Encoding: chunked\r\n" if self.chunked else b""
        return _head(out, framing + self.conn.trailer(request))

    def _end(self) -> None:
        if self.chunked and self.conn.transport is not None:
            self.conn.transport.write(b"0\r\n\r\n")
        if self.cursor is not None:
            # From the upstream's last byte (or the end) to this waiter's: the fan-out's cost.
            self.conn.edge.stats.waiter_lag(time.perf_counter() - self.cursor.stream.changed_at)
        self.close()
        self.conn.finished(self)


class ApiFromCache(FromCache):
    """A cached API answer."""

    __slots__ = ()
    api = True


class ApiFlight(FromFlight):
    """An API answer arriving from control: a shared fetch's, or this request's own. A request
    that waited on a shared fetch whose answer was meant for its leader alone (`personal`) asks
    control for itself instead."""

    __slots__ = ()
    api = True

    def start(self) -> None:
        super().start()
        conn = self.conn
        if conn.response is self and conn.timer is Timer.WAIT:  # still waiting: at control's pace
            conn.due = conn._loop.time() + api_path.CONTROL_TIMEOUT + 5.0

    def _send_head(self, stream: Stream) -> bool:
        head = stream.head
        if head is not None and self.x_cache is XCache.COALESCED and api_path.personal(head):
            conn = self.conn
            assert conn.server.api is not None
            self.close()
            self.x_cache = XCache.MISS
            forwarded = conn.server.api.forwarded_for(self.request.headers, conn.peer())
            self.ask = Ask(self.request.method, self.ask.key)
            self.plain = self.request.method == "GET"
            self.cursor = conn._pass(self.request, forwarded).cursor(self.pump)
            return False
        return super()._send_head(stream)


def _head(out: Shape, trailer: bytes) -> bytes:
    """A response head: the status line, the headers, Content-Length, then `trailer`."""
    lines = _STATUS.get(out.status) or f"HTTP/1.1 {out.status} Unknown\r\n".encode()
    head = lines + _lines(out.headers)
    if out.length is not None and out.status not in _NO_BODY:
        head += b"Content-Length: %d\r\n" % out.length
    return head + trailer


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
    edge, api = app[EDGE_KEY], app.get(API_KEY)
    server = Server(edge, app[metrics.REGISTRY_KEY], access_log=access_log, api=api)
    loop = asyncio.get_running_loop()
    await edge.start()
    if api is not None:
        await api.start()
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
        if api is not None:
            await api.close()
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
