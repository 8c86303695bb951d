"""A publisher that drops and comes back within the grace period continues the same stream:
real control (its live state machine), the Ingest service and ffmpeg publishing over RTMP. The
playlists go on with the same sequence numbers and a discontinuity at the join; a second
publisher meanwhile is refused; once the grace period runs out the stream is a VOD that passes
the packager's checks, and its key is refused."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import m3u8
import pytest
from aiohttp.test_utils import TestClient

from packager.live.control import IngestControl
from packager.live.ingest import Ingest, Ports
from tests.control.conftest import TOKEN, signup
from tests.live.controlled import live_control, until
from tests.live.publishers import ffmpeg, finished, free_port
from tests.live.test_ingest_class import SMALL
from tests.media import check_hls

GRACE = 12.0  # seconds: room for a loaded machine between the drop and the return


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with live_control(tmp_path, grace_seconds=GRACE, heartbeat_seconds=0.5) as client:
        yield client



async def test_reconnect_within_grace_continues_the_stream(control: TestClient, tmp_path: Path) -> None:
    owner = await signup(control, "streamer@example.com")
    made = await (await control.post("/api/v1/live", json={"title": "Rain"}, headers=owner)).json()
    vid, key = made["video"]["id"], made["stream_key"]
    store = tmp_path / "store"
    async with IngestControl(str(control.make_url("/")), TOKEN) as reports:
        ingest = Ingest(reports, str(store), Ports(free_port(), free_port()), config=SMALL)
        await ingest.start()
        rtmp = f"rtmp://127.0.0.1:{ingest.rtmp.port}/live/{key}"
        playlist = f"http://127.0.0.1:{ingest.ports.http}/live/{vid}/v240/index.m3u8"
        publishers = []
        try:
            async with aiohttp.ClientSession() as http:
                async def text() -> str:
                    async with http.get(playlist) as resp:
                        return await resp.text() if resp.status == 200 else ""

                async def video() -> dict:
                    return await (await control.get(f"/api/v1/videos/{vid}")).json()

                async def publisher() -> str:
                    resp = await control.get(f"/api/v1/live/{vid}", headers=owner)
                    return (await resp.json())["publisher"]

                publishers.append(await ffmpeg(rtmp, 60))
                await until(lambda: _has(text, lambda t: t.count("#EXTINF") >= 3), "3 segments")
                assert (await video())["state"] == "live"
                publishers[0].kill()  # dropped, as a crashed encoder or a lost network does
                await publishers[0].wait()
                await until(lambda: _is(publisher, "gone"), "gone")
                before = await text()
                assert "#EXT-X-PRELOAD-HINT" not in before and "#EXT-X-ENDLIST" not in before
                await asyncio.sleep(2)  # a while away
                back = time.time()
                publishers.append(await ffmpeg(rtmp, 60))  # back within the grace period
                after = await until(lambda: _has(text, lambda t: t.count("#EXTINF") >= t.count(
                    "#EXT-X-DISCONTINUITY") and "#EXT-X-DISCONTINUITY" in t and t.split(
                    "#EXT-X-DISCONTINUITY")[1].count("#EXTINF") >= 3), "3 segments after the join")
                assert (await video())["state"] == "live" and await publisher() == "connected"
                # A second publisher on the live key is refused; the first goes on.
                assert await finished(await ffmpeg(rtmp, 2)) != 0
                assert publishers[1].returncode is None

                parsed = m3u8.loads(after)
                numbers = [int(re.search(r"(\d+)", s.uri)[1]) for s in parsed.segments]
                assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))
                join = next(i for i, s in enumerate(parsed.segments) if s.discontinuity)
                # PROGRAM-DATE-TIME from the new publisher's wall clock, not extrapolated.
                assert parsed.segments[join - 1].program_date_time.timestamp() < back
                assert parsed.segments[join].program_date_time.timestamp() >= back
                assert all(abs(s.duration - 1.0) < 0.05 for s in parsed.segments[:join])

                publishers[1].kill()
                await publishers[1].wait()
                ready = await until(lambda: _state(video, "ready"), "a VOD after the grace period")
                assert await finished(await ffmpeg(rtmp, 2)) != 0  # the stream is over
        finally:
            for process in publishers:
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await ingest.close()
    out = store / "vod" / vid
    assert "#EXT-X-DISCONTINUITY" not in (out / "v240" / "index.m3u8").read_text()
    check_hls(out, tmp_path, ready["duration"], segment_seconds=1.0)


async def _has(text: Any, test: Any) -> str | None:
    body = await text()
    return body if test(body) else None


async def _is(read: Any, wanted: str) -> bool:
    return await read() == wanted


async def _state(read: Any, wanted: str) -> dict | None:
    video = await read()
    return video if video["state"] == wanted else None
