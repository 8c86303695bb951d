"""RTMP's transport (RTMP 1.0 §5): the simple handshake and the chunk stream, both directions.

The reader reassembles messages from interleaved chunk streams within fixed bounds (chunk size,
message size, chunk streams, bytes held in partial messages) and handles the chunk layer's own
two messages (Set Chunk Size, Abort); everything else goes up to the session."""

from __future__ import annotations

import asyncio
import os
import struct
import time
from dataclasses import dataclass, field

from packager.live.errors import CutOff

VERSION = 3
HANDSHAKE_SIZE = 1536
DEFAULT_CHUNK_SIZE = 128

SET_CHUNK_SIZE, ABORT, ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH = 1, 2, 3, 4, 5, 6
AUDIO, VIDEO, DATA_AMF3, COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0, AGGREGATE = 8, 9, 15, 17, 18, 20, 22
_KNOWN = frozenset({ACK, USER_CONTROL, WINDOW_ACK_SIZE, SET_PEER_BANDWIDTH, AUDIO, VIDEO, DATA_AMF3,
                    COMMAND_AMF3, DATA_AMF0, COMMAND_AMF0, AGGREGATE, SET_CHUNK_SIZE, ABORT})
_EXTENDED = 0xFFFFFF


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Server side of the simple handshake, which ffmpeg and OBS accept for plain RTMP."""
    c0 = await reader.readexactly(1)
    if c0[0] != VERSION:  # "G" of an HTTP request, 6 of RTMPE, anything else
        raise CutOff("not_rtmp", first_byte=c0[0])
    c1 = await reader.readexactly(HANDSHAKE_SIZE)
    s1 = struct.pack(">II", int(time.monotonic() * 1000) & 0xFFFFFFFF, 0) + os.urandom(HANDSHAKE_SIZE - 8)
    writer.write(c0 + s1 + c1)  # S0, S1, and S2 = an echo of C1
    await writer.drain()
    await reader.readexactly(HANDSHAKE_SIZE)  # C2 echoes S1: nothing in it worth checking


@dataclass(frozen=True)
class ChunkLimits:
    max_chunk_size: int = 65536  # encoders use 4096; the field allows 2^31, which no one needs
    max_message_bytes: int = 4 << 20  # a 4 MiB access unit is far beyond any live keyframe
    max_chunk_streams: int = 32  # encoders use under ten


@dataclass(slots=True)
class Message:
    type_id: int
    stream_id: int
    timestamp: int
    payload: bytes


@dataclass(slots=True)
class _Track:
    """One chunk stream's last header and the message in progress on it."""

    timestamp: int = 0
    delta: int = 0  # the last header's timestamp field, which a type-3 chunk repeats (as ffmpeg)
    length: int = 0
    type_id: int = 0
    stream_id: int = 0
    extended: bool = False
    parts: list[bytes] = field(default_factory=list)
    remaining: int = 0


class ChunkReader:
    def __init__(self, reader: asyncio.StreamReader, limits: ChunkLimits) -> None:
        self._reader = reader
        self._limits = limits
        self._tracks: dict[int, _Track] = {}
        self._held = 0  # bytes in partial messages, over every chunk stream
        self.chunk_size = DEFAULT_CHUNK_SIZE
        self.received = 0

    async def read(self) -> Message:
        """The next complete message other than Set Chunk Size and Abort."""
        while True:
            message = await self._chunk()
            if message is None:
                continue
            if message.type_id == SET_CHUNK_SIZE:
                self._set_chunk_size(message.payload)
            elif message.type_id == ABORT:
                self._abort(message.payload)
            else:
                return message

    async def _take(self, n: int) -> bytes:
        data = await self._reader.readexactly(n)
        self.received += n
        return data

    async def _chunk(self) -> Message | None:
        first = (await self._take(1))[0]
        fmt, csid = first >> 6, first & 0x3F
        if csid < 2:  # two- and three-byte basic headers
            extra = await self._take(csid + 1)
            csid = 64 + extra[0] + (extra[1] << 8 if csid else 0)
        track = self._track(fmt, csid)
        starting = track.remaining == 0
        await self._header(fmt, track, starting)
        if starting:
            if track.length == 0:
                return Message(track.type_id, track.stream_id, track.timestamp, b"")
            track.remaining = track.length
        data = await self._take(min(self.chunk_size, track.remaining))
        return self._append(track, data)

    def _track(self, fmt: int, csid: int) -> _Track:
        track = self._tracks.get(csid)
        if track is None:
            if fmt != 0:
                raise CutOff("bad_chunk", detail=f"chunk stream {csid} starts without a full header")
            if len(self._tracks) >= self._limits.max_chunk_streams:
                raise CutOff("bad_chunk", detail="too many chunk streams")
            track = self._tracks[csid] = _Track()
        return track

    async def _header(self, fmt: int, track: _Track, starting: bool) -> None:
        if fmt == 3:
            if track.extended:
                await self._take(4)  # repeats the last header's field
            if starting:
                track.timestamp = (track.timestamp + track.delta) & 0xFFFFFFFF
            return
        if not starting:
            raise CutOff("bad_chunk", detail="a new message header inside a message")
        raw = await self._take((11, 7, 3)[fmt])
        stamp = int.from_bytes(raw[0:3], "big")
        track.extended = stamp == _EXTENDED
        if track.extended:
            stamp = int.from_bytes(await self._take(4), "big")
        track.delta = stamp
        track.timestamp = stamp if fmt == 0 else (track.timestamp + stamp) & 0xFFFFFFFF
        if fmt < 2:
            self._describe(track, int.from_bytes(raw[3:6], "big"), raw[6])
        if fmt == 0:
            track.stream_id = int.from_bytes(raw[7:11], "little")

    def _describe(self, track: _Track, length: int, type_id: int) -> None:
        if type_id not in _KNOWN:
            raise CutOff("bad_message", detail=f"message type {type_id}")
        if length > self._limits.max_message_bytes:
            raise CutOff("message_too_large", length=length)
        track.length, track.type_id = length, type_id

    def _append(self, track: _Track, data: bytes) -> Message | None:
        track.remaining -= len(data)
        if track.remaining == 0 and not track.parts:  # one chunk: the usual case, no copy
            return Message(track.type_id, track.stream_id, track.timestamp, data)
        track.parts.append(data)
        self._held += len(data)
        if self._held > 2 * self._limits.max_message_bytes:
            raise CutOff("message_too_large", detail="too many bytes in partial messages")
        if track.remaining:
            return None
        payload = b"".join(track.parts)
        self._held -= len(payload)
        track.parts.clear()
        return Message(track.type_id, track.stream_id, track.timestamp, payload)

    def _set_chunk_size(self, payload: bytes) -> None:
        size = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
        if len(payload) < 4 or not 1 <= size <= self._limits.max_chunk_size:
            raise CutOff("chunk_size", size=size)
        self.chunk_size = size

    def _abort(self, payload: bytes) -> None:
        track = self._tracks.get(int.from_bytes(payload[:4], "big"))
        if track is not None and track.parts:
            self._held -= sum(map(len, track.parts))
            track.parts.clear()
            track.remaining = 0


class ChunkWriter:
    """Messages to the client, each as a type-0 chunk and type-3 continuations."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer
        self.chunk_size = DEFAULT_CHUNK_SIZE

    def send(self, csid: int, type_id: int, payload: bytes, stream_id: int = 0) -> None:
        header = struct.pack(">B3s3sB", csid, b"\0\0\0", len(payload).to_bytes(3, "big"), type_id)
        out = [header + struct.pack("<I", stream_id)]
        for start in range(0, len(payload), self.chunk_size):
            if start:
                out.append(bytes([0xC0 | csid]))
            out.append(payload[start : start + self.chunk_size])
        self._writer.writelines(out)

    def control(self, type_id: int, payload: bytes) -> None:
        """A protocol control or user control message (chunk stream 2, message stream 0)."""
        self.send(2, type_id, payload)

    def set_chunk_size(self, size: int) -> None:
        self.control(SET_CHUNK_SIZE, struct.pack(">I", size))
        self.chunk_size = size
