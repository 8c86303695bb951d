"""A recording StreamSink and an `authorize` callback for ingest tests: the stand-ins for the
live packager and control."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

from packager.live.media import AudioConfig, MediaPacket, VideoConfig


class RecordingSink:
    def __init__(self) -> None:
        self.video: VideoConfig | None = None
        self.audio: AudioConfig | None = None
        self.starts = 0
        self.ends = 0
        self.arrivals: list[tuple[float, MediaPacket]] = []
        self.ended = asyncio.Event()
        self.flowing = asyncio.Event()

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        assert self.starts == 0 and self.ends == 0
        self.starts += 1
        self.video, self.audio = video, audio

    async def packet(self, packet: MediaPacket) -> None:
        assert self.starts == 1 and self.ends == 0
        self.arrivals.append((asyncio.get_running_loop().time(), packet))
        self.flowing.set()

    async def end(self) -> None:
        self.ends += 1
        self.ended.set()

    def packets_of(self, kind: str) -> list[MediaPacket]:
        return [packet for _, packet in self.arrivals if packet.kind == kind]


class Authorizer:
    """Accepts app "live" with a known key that is not live already (a sink's end frees it)."""

    def __init__(self, *keys: str) -> None:
        self.keys = set(keys)
        self.live: set[str] = set()
        self.calls: list[tuple[str, str]] = []
        self.sinks: list[RecordingSink] = []
        self._published = asyncio.Event()

    async def __call__(self, app: str, key: str) -> RecordingSink | None:
        self.calls.append((app, key))
        if app != "live" or key not in self.keys or key in self.live:
            return None
        self.live.add(key)
        sink = RecordingSink()
        self.sinks.append(sink)
        self._published.set()
        asyncio.get_running_loop().create_task(self._free(key, sink))
        return sink

    async def _free(self, key: str, sink: RecordingSink) -> None:
        await sink.ended.wait()
        self.live.discard(key)

    async def published(self) -> None:
        await self._published.wait()

    async def first_packet(self) -> None:
        await self.published()
        await self.sinks[0].flowing.wait()


class _Server(Protocol):
    async def start(self) -> None: ...

    async def close(self) -> None: ...


Server = TypeVar("Server", bound=_Server)


@asynccontextmanager
async def running(make: Callable[[Authorizer], Server]) -> AsyncIterator[tuple[Server, Authorizer]]:
    """A started server whose `authorize` knows the keys "good" and "other"; once it is closed,
    every sink it gave must have been ended exactly once."""
    authorize = Authorizer("good", "other")
    server = make(authorize)
    await server.start()
    try:
        yield server, authorize
    finally:
        await server.close()
    assert all(sink.ends == 1 for sink in authorize.sinks), [sink.ends for sink in authorize.sinks]
