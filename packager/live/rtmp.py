"""An in-process RTMP server for publishers (ffmpeg, OBS): handshake, chunk stream, the AMF0
commands of a publish, and FLV audio/video handed to a `StreamSink` the `authorize` callback
gives for (app, stream key). It knows nothing of what the sink does.

Everything is bounded (connections, chunk and message sizes, handshake and idle time, time to
publish, time without video), and a bad publisher costs its own connection only, with exactly
one log line and a refusal counted by reason (packager.live.stats)."""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from packager.live import amf, flv
from packager.live.chunks import (
    ACK,
    AGGREGATE,
    AUDIO,
    COMMAND_AMF0,
    COMMAND_AMF3,
    DATA_AMF0,
    DATA_AMF3,
    SET_PEER_BANDWIDTH,
    USER_CONTROL,
    VIDEO,
    WINDOW_ACK_SIZE,
    ChunkLimits,
    ChunkReader,
    ChunkWriter,
    Message,
    handshake,
)
from packager.live.errors import CutOff
from packager.live.lifecycle import Authorize, publishing, serve
from packager.live.media import StreamSink
from packager.live.publisher import MediaLimits, Publisher
from packager.live.stats import IngestMetrics, Session, report
from reel.logs import fields

log = logging.getLogger("ingest.rtmp")

_WINDOW = 2_500_000  # our acknowledgement window and the peer bandwidth we announce
_OUT_CHUNK_SIZE = 4096
_STREAM_BEGIN, _PING_REQUEST, _PING_RESPONSE = 0, 6, 7
_MAX_STREAMS = 8  # createStream calls per connection (encoders make one)


@dataclass(frozen=True)
class RtmpLimits:
    max_connections: int = 64
    handshake_timeout: float = 5.0
    idle_timeout: float = 10.0  # no complete message for this long: a stalled socket
    publish_timeout: float = 10.0  # from connecting to an accepted publish (and for authorize)
    chunks: ChunkLimits = field(default_factory=ChunkLimits)
    media: MediaLimits = field(default_factory=MediaLimits)


class RtmpServer:
    """`await start()` listens; `await close()` stops listening and ends every connection (each
    accepted publisher's `sink.end()` is awaited first)."""

    def __init__(self, authorize: Authorize, host: str = "127.0.0.1", port: int = 1935, *,
                 limits: RtmpLimits | None = None, metrics: IngestMetrics | None = None) -> None:
        self._authorize = authorize
        self._host = host
        self._port = port
        self.limits = limits or RtmpLimits()
        self.metrics = metrics or IngestMetrics(CollectorRegistry())
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when constructed with port 0)."""
        assert self._server is not None, "not started"
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        log.info("rtmp listening", extra=fields(host=self._host, port=self.port))

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()
        self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        remote = _remote(writer)
        if len(self._tasks) >= self.limits.max_connections:
            writer.close()
            report(Session("rtmp", remote), CutOff("too_many_connections"), self.metrics)
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await serve(RtmpConnection(self._authorize, self.limits, self.metrics, reader, writer),
                        self.metrics)
        finally:
            self._tasks.discard(task)


def _remote(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if peer else "?"


class RtmpConnection:
    """One client connection, from the handshake to its end."""

    def __init__(self, authorize: Authorize, limits: RtmpLimits, metrics: IngestMetrics,
                 reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._authorize = authorize
        self._limits = limits
        self._metrics = metrics
        self._received = metrics.received.labels("rtmp")  # once: it is counted per message
        self._reader = reader
        self._writer = writer
        self._chunks = ChunkReader(reader, limits.chunks)
        self._out = ChunkWriter(writer)
        self._loop = asyncio.get_running_loop()
        self._opened = self._loop.time()
        self.session = Session("rtmp", _remote(writer))
        self._connected = False
        self._streams: set[int] = set()
        self.publisher: Publisher | None = None
        self._publish_stream = 0
        self._peer_window = 0
        self._acked = 0
        self._done = False
        self._commands: dict[str, Callable[[float, list, int], Awaitable[None]]] = {
            "connect": self._connect, "createStream": self._create_stream, "publish": self._publish,
            "deleteStream": self._delete_stream, "closeStream": self._delete_stream,
        }

    async def run(self) -> BaseException | None:
        """Serve until the publisher unpublishes; returns what ended it otherwise."""
        try:
            try:
                async with asyncio.timeout(self._limits.handshake_timeout):
                    await handshake(self._reader, self._writer)
            except TimeoutError:
                raise CutOff("handshake_timeout") from None
            while not self._done:
                message = await self._next()
                await self._dispatch(message)
                self._check_deadlines()
        except Exception as exc:  # every way a connection ends is reported by the caller
            return exc
        return None

    async def close(self) -> None:
        self._writer.close()

    async def _next(self) -> Message:
        try:
            async with asyncio.timeout(self._limits.idle_timeout):
                message = await self._chunks.read()
        except TimeoutError:
            raise CutOff("idle_timeout", seconds=self._limits.idle_timeout) from None
        self._received.inc(self._chunks.received - self.session.received)
        self.session.received = self._chunks.received
        if self._peer_window and self._chunks.received - self._acked >= self._peer_window:
            self._acked = self._chunks.received
            self._out.control(ACK, struct.pack(">I", self._acked & 0xFFFFFFFF))
        return message

    def _check_deadlines(self) -> None:
        if self.publisher is not None:
            self.publisher.check(self._loop.time())
        elif self._loop.time() - self._opened > self._limits.publish_timeout:
            raise CutOff("publish_timeout", seconds=self._limits.publish_timeout)

    async def _dispatch(self, message: Message) -> None:
        kind = message.type_id
        if kind in (AUDIO, VIDEO, DATA_AMF0, DATA_AMF3):
            await self._media(kind, message.timestamp, message.payload, message.stream_id)
        elif kind == AGGREGATE:
            for tag_type, timestamp, payload in flv.tags(message.payload, message.timestamp):
                await self._media(tag_type, timestamp, payload, message.stream_id)
        elif kind in (COMMAND_AMF0, COMMAND_AMF3):
            await self._command(message.payload[kind == COMMAND_AMF3 :], message.stream_id)
        elif kind == USER_CONTROL:
            self._user_control(message.payload)
        elif kind == WINDOW_ACK_SIZE:
            self._peer_window = int.from_bytes(message.payload[:4], "big")
        # Acknowledgement and Set Peer Bandwidth only concern what we send: nothing to do.

    async def _media(self, kind: int, timestamp: int, payload: bytes, stream_id: int) -> None:
        if kind == DATA_AMF3:
            kind, payload = DATA_AMF0, payload[1:]
        if kind == DATA_AMF0:
            return self._metadata(payload)
        if self.publisher is None or stream_id != self._publish_stream:
            raise CutOff("not_publishing", detail="media before an accepted publish")
        if kind == VIDEO:
            await self.publisher.video(payload, timestamp, self._loop.time())
        elif kind == AUDIO:
            await self.publisher.audio(payload, timestamp)

    def _metadata(self, payload: bytes) -> None:
        values = _amf(payload)
        if values[:1] == ["@setDataFrame"]:
            values = values[1:]
        if values[:1] == ["onMetaData"] and len(values) > 1 and isinstance(values[1], dict):
            meta = {k: values[1][k] for k in ("width", "height", "framerate", "videocodecid",
                                               "audiocodecid", "encoder") if k in values[1]}
            log.debug("metadata", extra=fields(**self.session.describe(), **meta))

    def _user_control(self, payload: bytes) -> None:
        if len(payload) >= 6 and int.from_bytes(payload[:2], "big") == _PING_REQUEST:
            self._out.control(USER_CONTROL, struct.pack(">H", _PING_RESPONSE) + payload[2:6])

    async def _command(self, payload: bytes, stream_id: int) -> None:
        values = _amf(payload)
        if len(values) < 2 or not isinstance(values[0], str) or not isinstance(values[1], float):
            raise CutOff("bad_command", detail="not a command")
        handler = self._commands.get(values[0])
        if handler is not None:  # releaseStream, FCPublish, FCUnpublish...: nothing to answer
            await handler(values[1], values[2:], stream_id)
        await self._writer.drain()

    async def _connect(self, transaction: float, args: list, stream_id: int) -> None:
        command = args[0] if args and isinstance(args[0], dict) else {}
        app = command.get("app")
        if self._connected or not isinstance(app, str):
            raise CutOff("bad_command", detail="connect twice or without an app")
        self._connected = True
        self.session.app = app.split("?", 1)[0].strip("/")
        self._out.control(WINDOW_ACK_SIZE, struct.pack(">I", _WINDOW))
        self._out.control(SET_PEER_BANDWIDTH, struct.pack(">IB", _WINDOW, 2))
        self._out.set_chunk_size(_OUT_CHUNK_SIZE)
        self._reply("_result", transaction, {"fmsVer": "FMS/3,0,1,123", "capabilities": 31},
                    _status("status", "NetConnection.Connect.Success", "Connection succeeded.",
                            objectEncoding=0))

    async def _create_stream(self, transaction: float, args: list, stream_id: int) -> None:
        if not self._connected or len(self._streams) >= _MAX_STREAMS:
            raise CutOff("bad_command", detail="createStream before connect, or too many")
        new = len(self._streams) + 1
        self._streams.add(new)
        self._reply("_result", transaction, None, float(new))

    async def _publish(self, transaction: float, args: list, stream_id: int) -> None:
        name = args[1] if len(args) > 1 else None
        if stream_id not in self._streams or self.publisher is not None or not isinstance(name, str):
            raise CutOff("bad_command", detail="publish without a stream or a name, or twice")
        self.session.key = name.split("?", 1)[0]
        sink = await self._authorized() if self.session.key else None
        if sink is None:
            self._reply("onStatus", 0, None, _status("error", "NetStream.Publish.BadName",
                                                     "Publishing refused."), stream_id=stream_id)
            await self._writer.drain()
            raise CutOff("unauthorized")
        publishing(self, Publisher(sink, self._limits.media, self._loop.time()), self._metrics)
        self._publish_stream = stream_id
        self._out.control(USER_CONTROL, struct.pack(">HI", _STREAM_BEGIN, stream_id))
        self._reply("onStatus", 0, None, _status("status", "NetStream.Publish.Start", "Publishing."),
                    stream_id=stream_id)
        log.debug("publish started", extra=fields(**self.session.describe()))

    async def _authorized(self) -> StreamSink | None:
        try:
            async with asyncio.timeout(self._limits.publish_timeout):
                return await self._authorize(self.session.app, self.session.key)
        except TimeoutError:
            raise CutOff("authorize_failed", detail="authorize timed out") from None
        except Exception as exc:
            raise CutOff("authorize_failed", error=repr(exc)) from exc

    async def _delete_stream(self, transaction: float, args: list, stream_id: int) -> None:
        deleted = args[1] if len(args) > 1 else None
        if self.publisher is not None and deleted == self._publish_stream:
            self._done = True  # a clean unpublish: run() returns, finish() ends the sink

    def _reply(self, name: str, transaction: float, *values: object, stream_id: int = 0) -> None:
        self._out.send(3 if stream_id == 0 else 5, COMMAND_AMF0, amf.encode(name, transaction, *values),
                       stream_id)


def _status(level: str, code: str, description: str, **extra: object) -> dict[str, object]:
    return {"level": level, "code": code, "description": description, **extra}


def _amf(payload: bytes) -> list:
    try:
        return amf.decode(payload)
    except amf.AmfError as exc:
        raise CutOff("bad_amf", detail=str(exc)) from None
