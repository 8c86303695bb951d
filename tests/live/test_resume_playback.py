"""hls.js in Chromium keeps playing a live stream whose publisher goes away for a few seconds
and comes back (a paused LiveStream, resumed by another publisher from its own time zero): it
plays on past the join, with no fatal error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from packager.live.media import AudioConfig, MediaPacket, VideoConfig
from packager.live.stream import LiveStream
from tests.live.rig import LiveRig, publication, publish
from tests.player import player_page, start_playing

AWAY = 4.0  # seconds without a publisher


class Resumed:
    """The second publisher's sink: it continues the paused stream."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        await self.stream.resume(video, audio)

    async def packet(self, packet: MediaPacket) -> None:
        await self.stream.packet(packet)

    async def end(self) -> None:
        await self.stream.end()


async def drop_and_return(rig: LiveRig) -> None:
    await publish(rig.stream, rig.source, until=8, end=False)
    await rig.stream.pause()
    await asyncio.sleep(AWAY)
    await publish(Resumed(rig.stream), rig.source, until=25)


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRig]:
    root: Path = tmp_path_factory.mktemp("live-resume")
    rig = LiveRig(publication(25, root / "clip.mp4"), root, video_id="back0001")
    rig._thread.start()
    rig.url = rig.call(rig._serve())  # type: ignore[assignment]
    rig.published = asyncio.run_coroutine_threadsafe(drop_and_return(rig), rig.loop)
    try:
        yield rig
    finally:
        if not rig.published.done():
            rig.published.cancel()
            rig.call(rig.stream.end())
        rig.stop()


def test_hlsjs_plays_on_across_a_publisher_that_came_back(rig: LiveRig, page: Page) -> None:
    config = {"lowLatencyMode": True}
    with player_page() as url:
        start_playing(page, url, rig.url + '/master.m3u8', config, levels=1)
        page.wait_for_function("() => document.querySelector('video').currentTime > 1", timeout=60_000)
        # Past the join: the media before it (8 s) and some after.
        page.wait_for_function("() => document.querySelector('video').currentTime > 11",
                               timeout=90_000)
        seen = page.evaluate("""() => ({errors: window.hlsErrors,
            error: document.querySelector('video').error,
            ccs: window.hls.levels[window.hls.currentLevel].details.fragments.map(f => f.cc)})""")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["error"] is None
    assert max(seen["ccs"]) == 1  # hls.js saw the discontinuity
    status, _, body = rig.get("v240/index.m3u8")
    assert status == 200 and body.decode().count("#EXT-X-DISCONTINUITY\n") == 1
