"""SRT ingest, optional: libsrt's own listener (Debian's ffmpeg has it; the PyAV wheel does not)
behind a small UDP front of ours, so that `authorize` decides before any process starts.

The front answers a caller's induction itself with a stateless cookie (a spoofed packet costs no
state and no process), reads the stream ID from the caller's conclusion (`publish:KEY`, or SRT's
access-control syntax `#!::r=KEY,m=publish`) and asks `authorize("live", KEY)`. Refused: an SRT
rejection, nothing started. Accepted: one `ffmpeg` listening on a loopback port for this caller;
the front replays the handshake to it with that listener's own cookie and then relays datagrams
both ways, while ffmpeg remuxes the caller's MPEG-TS (H.264 or HEVC, AAC) to MPEG-TS on its stdout,
one PES per access unit, which `ts.media` reads for the same Publisher as RTMP (FLV, which
ffmpeg 5.1 would write here, has no HEVC). Only one SRT connection per caller address; no
encryption (passphrase)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from packager.live import ts
from packager.live.errors import CutOff
from packager.live.lifecycle import Authorize, publishing, serve
from packager.live.media import StreamSink
from packager.live.publisher import MediaLimits, Publisher
from packager.live.stats import IngestMetrics, Session, report
from reel.logs import fields

log = logging.getLogger("ingest.srt")

Address = tuple[str, int]
INDUCTION, CONCLUSION = 1, 0xFFFFFFFF
_HANDSHAKE = b"\x80\x00\x00\x00"  # a control packet of type 0, subtype 0
_CIF = struct.Struct(">IHHIIIIII")
_COOKIE_AT = 16 + 28
_SRT_MAGIC, _STREAM_ID = 0x4A17, 5
# Rejection reasons a caller reports (libsrt's SRT_REJX_*: HTTP-like codes over 1000).
_BAD_REQUEST, _OVERLOAD, _FORBIDDEN = 1400, 1402, 1403


@dataclass(frozen=True)
class Handshake:
    """The handshake control packet's fixed fields (draft-sharabayko-srt §3.2.1), extensions raw."""

    version: int
    encryption: int
    extension: int
    isn: int
    mtu: int
    window: int
    kind: int
    socket_id: int
    cookie: int
    peer_ip: bytes
    extensions: bytes

    @classmethod
    def parse(cls, datagram: bytes) -> Handshake | None:
        if len(datagram) < 64 or datagram[:4] != _HANDSHAKE:
            return None
        return cls(*_CIF.unpack_from(datagram, 16), datagram[48:64], datagram[64:])

    def packet(self, destination: int, **changes: object) -> bytes:
        hs = dataclasses.replace(self, **changes)
        cif = _CIF.pack(hs.version, hs.encryption, hs.extension, hs.isn, hs.mtu, hs.window, hs.kind,
                        hs.socket_id, hs.cookie)
        return struct.pack(">4I", 0x80000000, 0, 0, destination) + cif + hs.peer_ip + hs.extensions

    def stream_id(self) -> str:
        """The Stream ID extension: 32-bit words, each sent with its bytes reversed."""
        data, pos = self.extensions, 0
        while pos + 4 <= len(data):
            kind, words = struct.unpack_from(">HH", data, pos)
            body = data[pos + 4 : pos + 4 + words * 4]
            if kind == _STREAM_ID:
                raw = b"".join(body[i : i + 4][::-1] for i in range(0, len(body), 4))
                return raw.rstrip(b"\0").decode("utf-8", "replace")
            pos += 4 + words * 4
        return ""


def publish_key(stream_id: str) -> str | None:
    """The stream key of `publish:KEY` or `#!::r=KEY,m=publish`; None for anything else."""
    if stream_id.startswith("publish:"):
        return stream_id.removeprefix("publish:") or None
    if stream_id.startswith("#!::"):
        pairs = dict(item.partition("=")[::2] for item in stream_id[4:].split(","))
        if pairs.get("m") == "publish" and pairs.get("r"):
            return pairs["r"]
    return None


def with_cookie(datagram: bytes, cookie: int) -> bytes:
    return datagram[:_COOKIE_AT] + struct.pack(">I", cookie) + datagram[_COOKIE_AT + 4 :]


def shutdown(destination: int) -> bytes:
    """A SHUTDOWN control packet (type 5) to the socket `destination`."""
    return struct.pack(">4I", 0x80050000, 0, 0, destination) + bytes(4)


def is_conclusion(datagram: bytes) -> bool:
    return datagram[:4] == _HANDSHAKE and datagram[36:40] == b"\xff\xff\xff\xff"


class Cookies:
    """SYN cookies bound to the caller's address and the minute, as libsrt's listener bakes them."""

    def __init__(self) -> None:
        self._secret = os.urandom(16)

    def make(self, address: Address, minute: int | None = None) -> int:
        minute = int(time.time() // 60) if minute is None else minute
        digest = hmac.new(self._secret, f"{address}{minute}".encode(), hashlib.sha256).digest()
        return int.from_bytes(digest[:4], "big")

    def valid(self, address: Address, cookie: int) -> bool:
        minute = int(time.time() // 60)
        return cookie in (self.make(address, minute), self.make(address, minute - 1))


@dataclass(frozen=True)
class SrtLimits:
    max_connections: int = 16
    handshake_timeout: float = 5.0  # from an accepted conclusion to ffmpeg's answer
    idle_timeout: float = 10.0  # nothing from ffmpeg for this long: the caller stalled
    latency_ms: int = 120  # the listener's SRT latency; the caller's, if larger, wins
    max_tag_bytes: int = 4 << 20  # the largest access unit (PES) held
    media: MediaLimits = field(default_factory=MediaLimits)


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes, Address], None]) -> None:
        self._received = received

    def datagram_received(self, data: bytes, addr: Address) -> None:
        self._received(data, addr)


class SrtServer:
    """`await start()` binds the UDP port; `await close()` ends every session (each accepted
    publisher's `sink.end()` awaited, each ffmpeg child killed)."""

    def __init__(self, authorize: Authorize, host: str = "127.0.0.1", port: int = 9000, *,
                 app: str = "live", limits: SrtLimits | None = None,
                 metrics: IngestMetrics | None = None, ffmpeg: str = "ffmpeg") -> None:
        self.authorize = authorize
        self.app = app
        self.ffmpeg = ffmpeg
        self._host, self._port = host, port
        self.limits = limits or SrtLimits()
        self.metrics = metrics or IngestMetrics(CollectorRegistry())
        self._cookies = Cookies()
        self._socket_id = int.from_bytes(os.urandom(4), "big") & 0x3FFFFFFF
        self._transport: asyncio.DatagramTransport | None = None
        self._sessions: dict[Address, SrtSession] = {}

    @property
    def port(self) -> int:
        assert self._transport is not None, "not started"
        return self._transport.get_extra_info("sockname")[1]

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._transport, _ = await loop.create_datagram_endpoint(
            lambda: _Datagrams(self._datagram), local_addr=(self._host, self._port))
        log.info("srt listening", extra=fields(host=self._host, port=self.port))

    async def close(self) -> None:
        tasks = [session.task for session in self._sessions.values() if session.task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def send(self, address: Address, datagram: bytes) -> None:
        if self._transport is not None:
            self._transport.sendto(datagram, address)

    def reject(self, address: Address, handshake: Handshake, code: int) -> None:
        self.send(address, handshake.packet(handshake.socket_id, kind=code, extensions=b"",
                                            socket_id=self._socket_id))

    def _datagram(self, data: bytes, address: Address) -> None:
        session = self._sessions.get(address)
        if session is not None:
            return session.from_caller(data)
        handshake = Handshake.parse(data)
        if handshake is None:  # not ours to answer; logging each datagram would be a flood
            self.metrics.refusals.labels("srt", "not_srt").inc()
        elif handshake.kind == INDUCTION:
            self.send(address, handshake.packet(
                handshake.socket_id, version=5, encryption=0, extension=_SRT_MAGIC,
                socket_id=self._socket_id, cookie=self._cookies.make(address), extensions=b""))
        elif handshake.kind == CONCLUSION and self._cookies.valid(address, handshake.cookie):
            self._accept(address, handshake, data)

    def _accept(self, address: Address, handshake: Handshake, conclusion: bytes) -> None:
        if len(self._sessions) >= self.limits.max_connections:
            self.reject(address, handshake, _OVERLOAD)
            report(Session("srt", _remote(address)), CutOff("too_many_connections"), self.metrics)
            return
        session = self._sessions[address] = SrtSession(self, address, handshake, conclusion)
        session.task = asyncio.create_task(self._serve(session))

    async def _serve(self, session: SrtSession) -> None:
        try:
            await serve(session, self.metrics)
        finally:
            del self._sessions[session.caller]


def _remote(address: Address) -> str:
    return f"{address[0]}:{address[1]}"


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SrtSession:
    """One caller: authorize, then an ffmpeg listener relayed to, its MPEG-TS to a Publisher."""

    def __init__(self, server: SrtServer, caller: Address, handshake: Handshake, conclusion: bytes) -> None:
        self.server = server
        self.caller = caller
        self.task: asyncio.Task[None] | None = None
        self.session = Session("srt", _remote(caller), app=server.app)
        self._limits = server.limits
        self._received = server.metrics.received.labels("srt")
        self._handshake = handshake
        self._conclusion = conclusion
        self._child_cookie: int | None = None
        self._connected = asyncio.Event()  # ffmpeg's listener answered the conclusion
        self._refused = 0
        self._relay: asyncio.DatagramTransport | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._errors = b""
        self._stderr: asyncio.Task[None] | None = None
        self.publisher: Publisher | None = None

    def from_caller(self, data: bytes) -> None:
        self._received.inc(len(data))
        self.session.received += len(data)
        if is_conclusion(data):  # the caller repeats it until the listener answers
            self._conclusion = data
            if self._child_cookie is None:
                return
            data = with_cookie(data, self._child_cookie)
        if self._relay is not None and self._child_cookie is not None:
            self._relay.sendto(data)

    def from_child(self, data: bytes, address: Address) -> None:
        if self._child_cookie is None:
            handshake = Handshake.parse(data)
            if handshake is not None and handshake.kind == INDUCTION and self._relay is not None:
                self._child_cookie = handshake.cookie
                self._relay.sendto(with_cookie(self._conclusion, handshake.cookie))
            return
        handshake = Handshake.parse(data)
        if handshake is not None and handshake.kind not in (INDUCTION, CONCLUSION):
            self._refused = handshake.kind  # libsrt refused the caller (no passphrase here, say)
        if handshake is not None:
            self._connected.set()
        self.server.send(self.caller, data)

    async def run(self) -> BaseException | None:
        """Serve until ffmpeg's output ends; returns what ended it otherwise."""
        try:
            sink = await self._authorized()
            publishing(self, Publisher(sink, self._limits.media, asyncio.get_running_loop().time()),
                       self.server.metrics)
            await self._spawn()
            await self._handshake_child()
            log.debug("publish started", extra=fields(**self.session.describe()))
            await self._pump()
        except Exception as exc:  # every way a session ends is reported by the caller
            return exc
        return None

    async def _authorized(self) -> StreamSink:
        key = publish_key(self._handshake.stream_id())
        if key is None:
            self.server.reject(self.caller, self._handshake, _BAD_REQUEST)
            raise CutOff("bad_stream_id", detail="expected publish:KEY")
        self.session.key = key
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                sink = await self.server.authorize(self.server.app, key)
        except Exception as exc:
            self.server.reject(self.caller, self._handshake, _FORBIDDEN)
            raise CutOff("authorize_failed", error=repr(exc)) from exc
        if sink is None:
            self.server.reject(self.caller, self._handshake, _FORBIDDEN)
            raise CutOff("unauthorized")
        return sink

    async def _spawn(self) -> None:
        port = _free_udp_port()
        url = f"srt://127.0.0.1:{port}?mode=listener&latency={self._limits.latency_ms * 1000}"
        # ffmpeg probes MPEG-TS for the whole analyzeduration, so it is start-up latency; 1 s
        # still covers the 0.7 s by which TS muxers delay audio (without it, no audio config).
        self._process = await asyncio.create_subprocess_exec(
            self.server.ffmpeg, "-nostdin", "-hide_banner", "-loglevel", "error",
            "-probesize", "5000000", "-analyzeduration", "1000000", "-i", url,
            "-map", "0:v:0?", "-map", "0:a:0?", "-c", "copy", *ts.FFMPEG_MUXER, "pipe:1",
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        self._stderr = asyncio.get_running_loop().create_task(self._keep_errors())
        self._relay, _ = await asyncio.get_running_loop().create_datagram_endpoint(
            lambda: _Datagrams(self.from_child), remote_addr=("127.0.0.1", port))

    async def _keep_errors(self) -> None:
        """ffmpeg's stderr, its tail kept for the log line (and the pipe never fills)."""
        assert self._process is not None and self._process.stderr is not None
        while line := await self._process.stderr.readline():
            self._errors = (self._errors + line)[-600:]

    async def _handshake_child(self) -> None:
        """An induction to ffmpeg's listener until it answers (it takes a moment to bind); its
        cookie then goes into the caller's conclusion, which from_child forwards."""
        assert self._relay is not None
        induction = self._handshake.packet(0, version=4, encryption=0, extension=2, kind=INDUCTION,
                                           cookie=0, extensions=b"")
        try:
            async with asyncio.timeout(self._limits.handshake_timeout):
                while not self._connected.is_set():
                    if self._child_cookie is None:
                        self._relay.sendto(induction)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.1):
                            await self._connected.wait()
        except TimeoutError:
            raise CutOff("handshake_timeout") from None
        if self._refused:
            raise CutOff("srt_refused", code=self._refused)

    async def _pump(self) -> None:
        """ffmpeg's MPEG-TS to the publisher until it ends; ffmpeg's exit status says how."""
        assert self._process is not None and self._process.stdout is not None
        await self._items(ts.media(self._process.stdout, self._limits.max_tag_bytes))
        if await self._process.wait() != 0:
            assert self._stderr is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stderr, 1)
            raise CutOff("remux_failed", detail=self._errors.decode("utf-8", "replace").strip())

    async def _items(self, items: AsyncIterator[ts.Item]) -> None:
        assert self.publisher is not None
        loop = asyncio.get_running_loop()
        while True:
            try:
                async with asyncio.timeout(self._limits.idle_timeout):
                    item = await anext(items, None)
            except TimeoutError:
                raise CutOff("idle_timeout", seconds=self._limits.idle_timeout) from None
            if item is None:
                return
            await self.publisher.take(item, loop.time())
            self.publisher.check(loop.time())

    async def close(self) -> None:
        """Stop ffmpeg and the relay (the publisher is ended by `serve`); a caller still
        connected is told to shut down, as ffmpeg, killed, no longer can."""
        if self._process is not None and self._process.returncode is None:
            self._process.kill()
            await self._process.wait()
            if self._connected.is_set():
                self.server.send(self.caller, shutdown(self._handshake.socket_id))
        if self._relay is not None:
            self._relay.close()
