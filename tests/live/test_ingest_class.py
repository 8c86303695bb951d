"""The Ingest class with a fake control: publishers admitted by stream key, refused when the key
is wrong or the streams are at their bound, and the stream's life reported (connected,
heartbeats, gone, VOD done), its live and VOD objects in the store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from packager.live.config import LiveConfig
from packager.live.ingest import Ingest, Ports, StaticAdmission
from tests.live.publishers import BOUND, ffmpeg, finished, free_port

SMALL = LiveConfig(rung_names=("v240", "v144"), preset="ultrafast", faster_presets=(), max_lag=3.0,
                   min_rungs=2)



class FakeControl:
    """Admits one key; records what ingest reports."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.happened: dict[str, asyncio.Event] = {}

    def event(self, call: str) -> asyncio.Event:
        return self.happened.setdefault(call, asyncio.Event())

    async def admit(self, stream_key: str) -> StaticAdmission | None:
        if stream_key.startswith("good"):
            return StaticAdmission(f"vid{stream_key}", f"vid{stream_key}.1", 60, False, 0.5)
        return None

    async def _report(self, call: str, publisher: str) -> Status:
        self.calls.append((call, publisher))
        self.event(call).set()
        return Status()

    async def connected(self, publisher: str) -> Status:
        return await self._report("connected", publisher)

    async def gone(self, publisher: str) -> Status:
        return await self._report("gone", publisher)

    async def heartbeat(self, publisher: str, viewers: int) -> Status:
        return await self._report("heartbeat", publisher)

    async def vod_done(self, publisher: str, duration: float, renditions: list[str]) -> Status:
        return await self._report("vod_done", publisher)

    async def vod_failed(self, publisher: str, reason: str, detail: str = "") -> Status:
        return await self._report("vod_failed", publisher)


@dataclass
class Status:
    end: bool = False
    disconnect: bool = False


async def test_ingest_admits_by_key_bounds_streams_and_reports_to_control(tmp_path) -> None:
    control = FakeControl()
    ingest = Ingest(control, str(tmp_path), Ports(free_port(), free_port()), max_streams=1, config=SMALL)
    await ingest.start()
    rtmp = f"rtmp://127.0.0.1:{ingest.rtmp.port}/live/"
    try:
        good = await ffmpeg(rtmp + "good1", 4)
        await asyncio.wait_for(control.event("connected").wait(), BOUND)
        assert await finished(await ffmpeg(rtmp + "good2", 2)) != 0  # one stream at most
        assert await finished(good) == 0
        await asyncio.wait_for(control.event("vod_done").wait(), BOUND)
        assert not ingest.broadcasts
        assert await finished(await ffmpeg(rtmp + "bad", 2)) != 0  # room now, but a wrong key
    finally:
        await ingest.close()
    registry = ingest.registry
    for outcome in ("admitted", "capacity", "refused"):
        assert registry.get_sample_value("reel_ingest_admissions_total", {"outcome": outcome}) == 1
    assert registry.get_sample_value("reel_ingest_max_streams") == 1
    calls = [call for call, _ in control.calls]
    assert calls[0] == "connected" and calls[-2:] == ["gone", "vod_done"] and "heartbeat" in calls
    assert (tmp_path / "vod" / "vidgood1" / "master.m3u8").exists()
    assert (tmp_path / "live" / "vidgood1" / "v240" / "index.m3u8").exists()
