"""The live HTTP handler against a stream whose parts the test hands in one by one: blocking
reloads and preload-hinted parts are answered as the part arrives, 503 when it does not come,
and the HTTP conventions of DESIGN.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from fractions import Fraction

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from packager.live.config import Cadence, LiveConfig
from packager.live.playlist import Part
from packager.live.server import live_app
from packager.live.stream import Changes, LiveStream
from packager.live.transcoder import Variant

CONFIG = LiveConfig()
CADENCE = Cadence.of(Fraction(30), CONFIG)
VARIANTS = [Variant("v360", "avc1.64001e", 640, 360, 800, 1200, 30.0),
            Variant("a128", "mp4a.40.2", kbps=128, peak_kbps=128)]


class Feed:
    """Hands parts to a LiveStream as its transcoder would (on the loop)."""

    def __init__(self, stream: LiveStream) -> None:
        self.stream = stream
        self.counts = dict.fromkeys(stream.renditions, 0)

    @property
    def count(self) -> int:
        return self.counts["v360"]

    def part(self, names: tuple[str, ...] = ("v360", "a128")) -> None:
        for name in names:
            count = self.counts[name]
            msn, index = divmod(count, CADENCE.segment_parts)
            self.stream._part(name, Part(msn, index, CADENCE.part_seconds, index == 0,
                                         f"{name}-{msn}-{index}".encode(),
                                         count * CADENCE.part_seconds,
                                         last=index == CADENCE.segment_parts - 1))
            self.counts[name] += 1


@pytest.fixture
async def feed() -> AsyncIterator[tuple[Feed, TestClient]]:
    stream = LiveStream("fake0001", config=CONFIG)
    stream.changes, stream._done = Changes(), asyncio.Event()
    stream._started(CADENCE, 1_700_000_000.0, VARIANTS)
    for variant in VARIANTS:
        stream._init(variant.name, b"init-" + variant.name.encode())
    async with TestClient(TestServer(live_app({"fake0001": stream}))) as client:
        yield Feed(stream), client


async def test_changes_wake_every_waiter_in_the_same_loop_turn() -> None:
    changes, state = Changes(), {"ready": False}
    waiters = [asyncio.create_task(changes.until(lambda: state["ready"], 5)) for _ in range(3)]
    await asyncio.sleep(0)
    assert not any(w.done() for w in waiters)
    state["ready"] = True
    changes.notify()
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert all(w.done() and w.result() for w in waiters)


async def test_a_blocking_reload_waits_for_its_part(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    for _ in range(4):
        parts.part()
    asked = asyncio.create_task(client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=1&_HLS_part=1"))
    hinted = asyncio.create_task(client.get("/live/fake0001/v360/part_00001_1.m4s"))
    await asyncio.sleep(0.2)
    parts.part(("a128",))  # another rendition's part does not answer it
    await asyncio.sleep(0.2)
    assert not asked.done() and not hinted.done()
    parts.part()
    response, part = await asyncio.wait_for(asked, 2), await asyncio.wait_for(hinted, 2)
    text = await response.text()
    assert response.status == 200 and 'URI="part_00001_1.m4s"' in text
    assert "seg_00000.m4s" in text and "seg_00001.m4s" not in text
    assert text.count('URI="../a128/index.m3u8",LAST-MSN=1,LAST-PART=2') == 1
    assert '#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_00001_2.m4s"' in text
    assert part.status == 200 and await part.read() == b"v360-1-1"
    assert part.headers["Content-Type"] == "video/iso.segment"
    assert part.headers["Cache-Control"].startswith("public, max-age=")
    assert part.headers["Access-Control-Allow-Origin"] == "*"


async def test_the_first_playlist_waits_for_the_first_part(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    for path in ("v360/index.m3u8", "v360/index.m3u8?_HLS_msn=0&_HLS_part=0", "master.m3u8"):
        asked = asyncio.create_task(client.get(f"/live/fake0001/{path}"))
        await asyncio.sleep(0.1)
        if parts.count == 0:
            assert not asked.done()
            parts.part()
        response = await asyncio.wait_for(asked, 2)
        assert response.status == 200, path
        assert response.headers["Content-Type"] == "application/vnd.apple.mpegurl"


async def test_a_part_that_never_comes_is_a_503(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    parts.part()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response, part = await asyncio.gather(
        client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=0&_HLS_part=1"),
        client.get("/live/fake0001/v360/part_00000_1.m4s"))
    assert response.status == part.status == 503
    assert response.headers["Retry-After"] and response.headers["Cache-Control"] == "no-store"
    assert loop.time() - started >= 3 * CADENCE.target_duration - 0.1  # held that long first


async def test_too_far_ahead_or_gone(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    for _ in range(3 * 7):
        parts.part()
    assert (await client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=10")).status == 400
    assert (await client.get("/live/fake0001/v360/part_00010_0.m4s")).status == 404
    assert (await client.get("/live/fake0001/v360/part_00000_0.m4s")).status == 404  # aged out
    old = await client.get("/live/fake0001/v360/seg_00000.m4s")  # no store behind: gone
    assert old.status == 404
    # A part index past the segment's last asks for the next segment's first part.
    response = await client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=5&_HLS_part=3")
    assert response.status == 200 and 'part_00006_0.m4s"' in await response.text()


async def test_segments_init_and_ranges(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    for _ in range(3):
        parts.part()
    segment = await client.get("/live/fake0001/a128/seg_00000.m4s")
    body = await segment.read()
    assert body == b"a128-0-0a128-0-1a128-0-2"
    assert segment.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    etag = segment.headers["ETag"]
    assert etag.startswith('"') and segment.headers["Accept-Ranges"] == "bytes"
    ranged = await client.get("/live/fake0001/a128/seg_00000.m4s", headers={"Range": "bytes=4-7"})
    assert ranged.status == 206 and await ranged.read() == body[4:8]
    again = await client.get("/live/fake0001/a128/seg_00000.m4s", headers={"If-None-Match": etag})
    assert again.status == 304
    init = await client.get("/live/fake0001/v360/init.mp4")
    assert await init.read() == b"init-v360" and init.headers["Content-Type"] == "video/mp4"
    options = await client.options("/live/fake0001/v360/index.m3u8")
    assert options.status == 204 and "GET" in options.headers["Access-Control-Allow-Methods"]
    assert (await client.post("/live/fake0001/v360/index.m3u8")).status == 405
    assert (await client.get("/live/other0001/v360/index.m3u8")).status == 404


async def test_the_end_answers_every_waiter(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    parts.part()
    asked = asyncio.create_task(client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=1&_HLS_part=0"))
    await asyncio.sleep(0.1)
    parts.stream._ended()
    response = await asyncio.wait_for(asked, 2)
    assert response.status == 200 and "#EXT-X-ENDLIST" in await response.text()


async def test_a_dropped_rendition_refuses_to_block(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    parts.part()
    asked = asyncio.create_task(client.get("/live/fake0001/v360/index.m3u8?_HLS_msn=0&_HLS_part=1"))
    await asyncio.sleep(0.1)
    parts.stream._dropped("v360")
    response = await asyncio.wait_for(asked, 2)
    assert response.status == 404  # never an unchanged playlist
    # nor a frozen one to a plain reload: players must leave the rung, not wait on it
    assert (await client.get("/live/fake0001/v360/index.m3u8")).status == 404
    assert (await client.get("/live/fake0001/a128/index.m3u8")).status == 200
    master = await (await client.get("/live/fake0001/master.m3u8")).text()
    assert "v360" not in master and "a128/index.m3u8" in master


async def test_a_hinted_part_is_streamed_as_it_grows(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    stream = parts.stream
    parts.part()
    asked = asyncio.create_task(client.get("/live/fake0001/v360/part_00000_1.m4s"))
    await asyncio.sleep(0.1)
    assert not asked.done()
    stream._chunk("v360", 0, 1, b"first-")
    response = await asyncio.wait_for(asked, 2)
    assert response.status == 200 and response.headers["Transfer-Encoding"] == "chunked"
    assert await asyncio.wait_for(response.content.readany(), 2) == b"first-"  # before the end
    stream._chunk("v360", 0, 1, b"second-")
    assert await asyncio.wait_for(response.content.readany(), 2) == b"second-"
    stream._part("v360", Part(0, 1, CADENCE.part_seconds, False, b"first-second-third",
                              CADENCE.part_seconds))
    assert await asyncio.wait_for(response.content.read(), 2) == b"third"
    whole = await client.get("/live/fake0001/v360/part_00000_1.m4s")  # complete: all at once
    assert await whole.read() == b"first-second-third" and "ETag" in whole.headers


async def test_a_part_that_stops_growing_is_cut_short(feed: tuple[Feed, TestClient]) -> None:
    parts, client = feed
    parts.part()
    parts.stream._chunk("v360", 0, 1, b"first-")
    response = await client.get("/live/fake0001/v360/part_00000_1.m4s")
    with pytest.raises(aiohttp.ClientPayloadError):  # never a truncated part passed for whole
        await asyncio.wait_for(response.content.read(), 3 * CADENCE.target_duration + 2)
