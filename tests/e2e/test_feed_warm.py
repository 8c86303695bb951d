"""The warmed feed: after a signed-out viewer's "for you" list, the next viewer at that region's
edge finds the first segment of each of the first three videos already cached (X-Cache: HIT)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urljoin

import aiohttp
import pytest

from packager.testclip import make_test_clip
from tests.e2e.conftest import Demo, demo_stack
from tests.e2e.test_uploads import _creator, _until_settled, _upload


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A stack of its own: "for you" ranks the whole catalog, and the session's shared stack has
    whatever views and uploads the tests before this one left (a load test's trending videos)."""
    yield from demo_stack(tmp_path_factory, "--no-demo-live", "--demo-seconds", "4")


async def _metric(http: aiohttp.ClientSession, url: str, name: str) -> float:
    async with http.get(url + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


async def _first_segment(http: aiohttp.ClientSession, edge: str, video_id: str) -> str:
    """As a player: the master, its first variant's playlist, then that playlist's first segment;
    the segment's X-Cache."""
    master = f"{edge}/vod/{video_id}/master.m3u8"
    async with http.get(master) as resp:
        lines = (await resp.text()).splitlines()
    variant = lines[next(i for i, line in enumerate(lines) if line.startswith("#EXT-X-STREAM-INF")) + 1]
    playlist = urljoin(master, variant)
    async with http.get(playlist) as resp:
        lines = (await resp.text()).splitlines()
    segment = lines[next(i for i, line in enumerate(lines) if line.startswith("#EXTINF")) + 1]
    async with http.get(urljoin(playlist, segment)) as resp:
        assert resp.status == 200
        await resp.read()
        return resp.headers["X-Cache"]


async def test_for_you_warms_the_viewers_edge(demo: Demo, tmp_path: Path) -> None:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        auth = await _creator(http, demo.control)
        fresh = []
        for n in range(3):  # three videos no one has watched: cold at every edge
            clip = make_test_clip(tmp_path / f"clip{n}.mp4", seconds=2 + n, width=426, height=240,
                                  fps=24)  # different lengths: identical uploads are one video
            fresh.append((await _upload(http, demo.control, clip, f"warm me {n}", auth))["id"])
        for vid in fresh:
            assert (await _until_settled(http, demo.control, vid))["state"] == "ready"
        edge = demo.edges[0]  # geo sends loopback viewers to the default region's edge
        prefetches = await _metric(http, edge, "reel_edge_prefetches")

        async with http.get(f"{demo.control}/api/v1/feed/for-you?limit=3") as resp:
            assert resp.status == 200
            items = (await resp.json())["items"]
        assert [v["id"] for v in items] == fresh[::-1]  # nothing trends yet: newest first
        assert all(v["playback_url"] and v["poster_url"] for v in items)

        # The warming runs beside the response: wait for its prefetches to land.
        async with asyncio.timeout(60):
            while True:
                asked = await _metric(http, demo.control, 'reel_control_feed_warm_total{result="asked"}')
                if (asked >= 3 and await _metric(http, edge, "reel_edge_prefetches") >= prefetches + 3
                        and await _metric(http, edge, "reel_edge_inflight_fetches") == 0):
                    break
                await asyncio.sleep(0.1)
        assert [await _first_segment(http, edge, v["id"]) for v in items] == ["HIT"] * 3
