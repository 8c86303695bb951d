"""The load generator's LL-HLS viewers against the synthetic origin: they follow the stream part
by part, video and the audio rendition the master names, as hls.js does; a viewer whose
rendition is gone (404, a rung the ladder dropped) moves to another one instead of hammering the
missing one; late audio stalls them as late video would."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.test_utils import TestServer

from loadtest import llviewers
from loadtest.liveorigin import SyntheticLive, app


class LateAudio(SyntheticLive):
    """Audio parts answered `late` seconds after they are asked for (0: on time)."""

    late = 0.0

    async def _part(self, request: web.Request, rendition: str, g: int) -> web.StreamResponse:
        if rendition == self.audio and self.late:
            await asyncio.sleep(self.late)
        return await super()._part(request, rendition, g)


async def watch(live: SyntheticLive, renditions: list[str], seconds: float = 2.0, audio: bool = True,
                during=None) -> dict:  # noqa: ANN001 - called in the measured window
    clock = asyncio.create_task(live.run())
    server = TestServer(app(live))
    await server.start_server()
    try:
        await asyncio.sleep(1.5)  # a few parts on the air
        now = time.time()
        window = llviewers.Window(now + 0.5, now + 0.5 + seconds)
        task = asyncio.create_task(llviewers.viewers(server.host, server.port, 2, window, 0, 0, "",
                                                     live.video_id, renditions, audio))
        if during is not None:
            await asyncio.sleep(1.0)
            during()
        return await task
    finally:
        clock.cancel()
        await server.close()


def audio_parts(live: SyntheticLive) -> int:
    return sum(n for path, n in live.requests.items() if "/a128/part_" in path)


async def test_viewers_follow_video_and_audio_and_leave_a_dropped_rendition() -> None:
    live = SyntheticLive("live0001", ("v360",), 0.2)
    log = await watch(live, ["v999", "v360"])
    assert log["failures"] == [] and log["stalls"] == []
    assert live.requests["/live/live0001/master.m3u8"] == 2  # each viewer read the master
    keys = [key for key, _ in log["answered"]]
    video = [k for k in keys if k.startswith("/live/live0001/v360/?_HLS_msn=")]
    audio = [k for k in keys if k.startswith("/live/live0001/a128/?_HLS_msn=")]
    assert len(video) + len(audio) == len(keys)
    # Both viewers (the one that began on the missing rendition too) were answered part after
    # part on both renditions, and fetched the audio parts they were told of.
    for answered in (video, audio):
        assert len(answered) >= 2 * len(set(answered)) - 2 and len(set(answered)) >= 3
    assert len(log["audio"]) == len(audio) and audio_parts(live) >= len(audio)
    assert log["latency"] and len(log["latency"]) == len(video) and max(log["latency"]) < 5


async def test_without_audio_in_the_master_or_with_it_off_viewers_read_video_only() -> None:
    for live, audio in ((SyntheticLive("live0001", ("v360",), 0.2, audio=None), True),
                        (SyntheticLive("live0001", ("v360",), 0.2), False)):
        log = await watch(live, ["v360"], seconds=1.0, audio=audio)
        assert log["failures"] == [] and log["answered"] and log["audio"] == []
        assert audio_parts(live) == 0
        assert not any("/a128/" in path for path in live.requests)
        assert live.requests["/live/live0001/master.m3u8"] == (2 if audio else 0)


async def test_audio_arriving_late_stalls_the_viewers() -> None:
    live = LateAudio("live0001", ("v360",), 0.2)  # PART-HOLD-BACK 0.6 s

    def hold_audio() -> None:
        live.late = 1.0

    log = await watch(live, ["v360"], seconds=2.5, during=hold_audio)
    assert log["failures"] == []
    assert len(log["stalls"]) >= 2  # both viewers waited for sound
    assert log["latency"] and min(log["latency"]) < 0.5  # their video was on time
