"""What players and caches see of a packaged video: ffprobe through the edge, HITs, coalescing."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import m3u8
import pytest

from tests.e2e.conftest import Demo
from tests.media import ffprobe_json


async def _origin_segment_fetches(http: aiohttp.ClientSession, origin: str) -> float:
    async with http.get(f"{origin}/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("reel_origin_responses_total{") and 'kind="segment"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_ffprobe_finds_every_rendition_through_the_edge(demo: Demo) -> None:
    master_url = f"{demo.edges[0]}/vod/{demo.video_id}/master.m3u8"
    master = m3u8.load(master_url)
    expected = sorted(p.stream_info.resolution for p in master.playlists)
    assert len(expected) >= 3
    probe = ffprobe_json("-show_entries", "stream=codec_type,width,height", master_url)
    video = sorted({(s["width"], s["height"]) for s in probe["streams"]
                    if s["codec_type"] == "video"})
    assert video == expected
    assert any(s["codec_type"] == "audio" for s in probe["streams"])


@pytest.mark.asyncio
async def test_geo_redirects_players_to_an_edge(demo: Demo) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        f"{demo.geo}/vod/{demo.video_id}/master.m3u8", allow_redirects=False
    ) as resp:
        assert resp.status == 302
        # 127.0.0.1 is in no GeoIP database: the default region's edge.
        assert resp.headers["Location"] == f"{demo.edges[0]}/vod/{demo.video_id}/master.m3u8"


@pytest.mark.asyncio
async def test_second_request_is_a_hit(demo: Demo) -> None:
    url = f"{demo.edges[1]}/vod/{demo.video_id}/v360/seg_00001.m4s"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as first:
            first_body = await first.read()
            assert first.status == 200 and first.headers["X-Cache"] in ("MISS", "HIT")
        async with http.get(url) as second:
            assert second.status == 200
            assert second.headers["X-Cache"] == "HIT"
            assert "Age" in second.headers
            assert await second.read() == first_body
            assert second.headers["Content-Type"] == "video/iso.segment"


@pytest.mark.asyncio
async def test_twenty_concurrent_misses_make_one_origin_fetch(demo: Demo) -> None:
    async with aiohttp.ClientSession() as http:
        playlist = m3u8.loads(await (await http.get(
            f"{demo.origin}/vod/{demo.video_id}/v240/index.m3u8")).text())
        segment = playlist.segments[-1].uri
        url = f"{demo.edges[1]}/vod/{demo.video_id}/v240/{segment}"
        # The ap-southeast edge asks its own region's origin first, the other if that fails.
        before = sum([await _origin_segment_fetches(http, o) for o in demo.origins])

        async def get() -> tuple[int, str, bytes]:
            async with http.get(url) as resp:
                return resp.status, resp.headers["X-Cache"], await resp.read()

        results = await asyncio.gather(*(get() for _ in range(20)))
        after = sum([await _origin_segment_fetches(http, o) for o in demo.origins])
    assert after - before == 1
    assert {status for status, _, _ in results} == {200}
    assert len({body for _, _, body in results}) == 1
    caches = sorted(cache for _, cache, _ in results)
    assert caches.count("MISS") == 1
    assert all(re.fullmatch("MISS|COALESCED|HIT", c) for c in caches)


def test_ffprobe_plays_the_steered_master(demo: Demo) -> None:
    # Last in this module: ffprobe reads every Pathway, filling both edges' caches.
    # ffmpeg knows nothing of Content Steering: it reads each Pathway's variants as programs.
    assert demo.playback_url == f"{demo.geo}/steer/vod/{demo.video_id}/master.m3u8"
    master = m3u8.load(demo.playback_url)
    assert {p.stream_info.pathway_id for p in master.playlists} == {"eu-west", "ap-southeast"}
    probe = ffprobe_json("-show_entries", "stream=codec_type,width,height", demo.playback_url)
    video = {(s["width"], s["height"]) for s in probe["streams"] if s["codec_type"] == "video"}
    assert video == {p.stream_info.resolution for p in master.playlists}
    assert any(s["codec_type"] == "audio" for s in probe["streams"])
