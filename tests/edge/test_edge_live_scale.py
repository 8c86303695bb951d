"""A celebrity's live stream through one edge (issue 15): however many viewers wait on the same
blocking reload or hinted part, the edge asks upstream once; waiting is bounded with a clear 503;
hinted parts stream to every waiter as they grow; the edge asks for the next part before anyone.

The upstream is loadtest's synthetic LL-HLS origin driven by hand (`live.grow()` writes one
chunk of the growing part), so every step is an event, not a sleep."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from loadtest.liveorigin import SyntheticLive, app
from tests.edge.conftest import metric

BASE = "/live/celeb0001/v720/"
PLAYLIST = BASE + "index.m3u8"


@pytest.fixture
async def live() -> AsyncIterator[tuple[SyntheticLive, str]]:
    stream = SyntheticLive(per_segment=6, chunks=3)
    server = TestServer(app(stream))
    await server.start_server()
    try:
        yield stream, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


def listed(text: str, part: str) -> bool:
    """Whether a playlist lists `part` as a part (not merely as its preload hint)."""
    return any(line.startswith("#EXT-X-PART:") and f'URI="{part}"' in line for line in text.splitlines())


def parts(stream: SyntheticLive, n: int) -> None:
    for _ in range(n * stream.chunks):
        stream.grow()


async def until(check, within: float = 20.0) -> None:
    """Wait (briefly polling, test side only) until `await check()` is true."""
    async with asyncio.timeout(within):
        while True:
            if await check():
                return
            await asyncio.sleep(0.01)


async def asked(stream: SyntheticLive, path_qs: str) -> None:
    """Until the upstream has been asked for `path_qs`."""
    async def check() -> bool:
        return stream.requests[path_qs] > 0
    await until(check)


async def readers(client, n: int) -> None:
    """Until `n` requests follow upstream fetches at the edge."""
    async def check() -> bool:
        return await metric(client, "reel_edge_inflight_readers") >= n
    await until(check)


async def settled(client) -> None:
    """Until the edge has no fetch in progress."""
    async def check() -> bool:
        return await metric(client, "reel_edge_inflight_fetches") == 0
    await until(check)


def session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=True))


async def test_hundreds_of_viewers_of_one_blocking_reload_make_one_upstream_request(make_edge, live):
    stream, url = live
    parts(stream, 5)  # parts 0..4 of segment 0 exist; the viewers wait for part 5
    client = await make_edge([url], live_prefetch=0)
    target = str(client.make_url(PLAYLIST + "?_HLS_msn=0&_HLS_part=5"))
    viewers = 300

    async with session() as http:
        async def view(spelling: str) -> tuple[int, str, str]:
            async with http.get(target.replace("_HLS_part=5", spelling)) as resp:
                return resp.status, await resp.text(), resp.headers["Age"]

        waiting = [asyncio.create_task(view(("_HLS_part=5", "_HLS_part=05")[i % 2])) for i in range(viewers)]
        await asked(stream, PLAYLIST + "?_HLS_msn=0&_HLS_part=5")
        await readers(client, viewers)  # every one of them is waiting at the edge
        parts(stream, 1)
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 20)
    assert {status for status, _, _ in answers} == {200}
    assert all(listed(text, "part_0_5.m4s") for _, text, _ in answers)
    assert {age for _, _, age in answers} == {"0"}
    assert stream.requests[PLAYLIST + "?_HLS_msn=0&_HLS_part=5"] == 1
    assert await metric(client, 'reel_edge_live_upstream_requests_total{kind="blocking_playlist"}') == 1


async def test_waiting_is_bounded_per_key_and_in_total_with_a_503_beyond(make_edge, live):
    stream, url = live
    parts(stream, 1)
    client = await make_edge([url], max_waiters=4, max_waiters_total=6, live_prefetch=0)

    async with session() as http:
        async def view(query: str) -> tuple[int, dict[str, str], bytes]:
            async with http.get(str(client.make_url(PLAYLIST + query))) as resp:
                return resp.status, dict(resp.headers), await resp.read()

        first = [asyncio.create_task(view("?_HLS_msn=0&_HLS_part=3")) for _ in range(4)]
        await readers(client, 4)
        status, headers, body = await view("?_HLS_msn=0&_HLS_part=3")  # a fifth on the same key
        assert status == 503 and headers["Retry-After"] == "1"
        assert headers["Content-Type"] == "application/problem+json" and b"Too Many Waiters" in body
        second = [asyncio.create_task(view("?_HLS_msn=0&_HLS_part=4")) for _ in range(2)]
        await readers(client, 6)
        status, headers, _ = await view("?_HLS_msn=0&_HLS_part=5")  # another key, but 6 wait already
        assert status == 503 and headers["Retry-After"] == "1"
        assert await metric(client, "reel_edge_waiters_refused_total") == 2
        parts(stream, 4)
        answers = await asyncio.wait_for(asyncio.gather(*first, *second), 20)
        assert [status for status, _, _ in answers] == [200] * 6
        # Once answered, nobody waits: the same request is served again (from the cache).
        assert (await view("?_HLS_msn=0&_HLS_part=3"))[0] == 200


async def test_a_hinted_part_streams_to_every_waiter_as_it_grows_then_is_cached(make_edge, live):
    stream, url = live
    parts(stream, 2)  # the hint is part_0_2
    client = await make_edge([url], live_prefetch=0)
    path = BASE + "part_0_2.m4s"
    first_chunk = stream.chunk(2, 0, "v720")

    all_early = asyncio.Event()
    early_seen = 0

    async with session() as http:
        async def view() -> tuple[bytes, bytes, str]:
            nonlocal early_seen
            async with http.get(str(client.make_url(path))) as resp:
                assert resp.status == 200
                early = await resp.content.readexactly(len(first_chunk))
                early_seen += 1
                if early_seen == 50:
                    all_early.set()
                return early, await resp.read(), resp.headers["X-Cache"]

        waiting = [asyncio.create_task(view()) for _ in range(50)]
        await asked(stream, path)
        await readers(client, 50)
        stream.grow()  # the first chunk only: every waiter must have it before the part is done
        await asyncio.wait_for(all_early.wait(), 10)
        assert stream.done == 2 and stream.growing == 1
        stream.grow()
        stream.grow()
        answers = await asyncio.wait_for(asyncio.gather(*waiting), 10)
    assert all(early + rest == stream.part(2, "v720") for early, rest, _ in answers)
    assert stream.requests[path] == 1
    async with client.get(path) as resp:  # kept briefly: the next viewer is a hit
        assert resp.headers["X-Cache"] == "HIT" and await resp.read() == stream.part(2, "v720")
    assert stream.requests[path] == 1


async def test_a_plain_reload_is_kept_for_about_one_part_with_its_age(make_edge, live):
    stream, url = live
    parts(stream, 3)
    client = await make_edge([url], live_prefetch=0)
    for _ in range(5):
        async with client.get(PLAYLIST) as resp:
            assert resp.status == 200 and listed(await resp.text(), "part_0_2.m4s")
            assert int(resp.headers["Age"]) == 0  # younger than a part: hls.js plans its next ask on it
    assert stream.requests[PLAYLIST] == 1
    await asyncio.sleep(stream.part_target + 0.1)  # one part later, "now" is asked for again
    parts(stream, 1)
    async with client.get(PLAYLIST) as resp:
        assert listed(await resp.text(), "part_0_3.m4s") and resp.headers["X-Cache"] == "MISS"
    assert stream.requests[PLAYLIST] == 2


async def test_the_edge_asks_for_the_next_part_before_any_viewer_and_stops_unwatched(make_edge, live):
    stream, url = live
    parts(stream, 5)
    client = await make_edge([url])
    async with client.get(PLAYLIST + "?_HLS_msn=0&_HLS_part=4") as resp:  # a viewer's reload
        assert listed(await resp.text(), "part_0_4.m4s")
    # Part 4 closed nothing: the next reload is part 5 of segment 0, the hint is part_0_5.
    await asked(stream, PLAYLIST + "?_HLS_msn=0&_HLS_part=5")
    await asked(stream, BASE + "part_0_5.m4s")
    parts(stream, 1)  # part 5 closes segment 0: the prefetched answer names part 0 of segment 1 next
    await settled(client)
    # A viewer's reload and part are answered from what was fetched ahead: no new upstream request.
    async with client.get(PLAYLIST + "?_HLS_part=5&_HLS_msn=0") as resp:
        assert resp.headers["X-Cache"] == "HIT" and listed(await resp.text(), "part_0_5.m4s")
    async with client.get(BASE + "part_0_5.m4s") as resp:
        assert resp.headers["X-Cache"] == "HIT" and await resp.read() == stream.part(5, "v720")
    assert stream.requests[PLAYLIST + "?_HLS_msn=0&_HLS_part=5"] == 1
    assert stream.requests[BASE + "part_0_5.m4s"] == 1
    # That viewer read the prefetched playlist, so the edge keeps ahead: segment 1, part 0.
    await asked(stream, PLAYLIST + "?_HLS_msn=1&_HLS_part=0")
    parts(stream, 1)
    await settled(client)
    # Nobody read that one: the edge goes no further.
    parts(stream, 2)
    await asyncio.sleep(0.3)
    assert stream.requests[PLAYLIST + "?_HLS_msn=1&_HLS_part=1"] == 0
    assert await metric(client, "reel_edge_live_prefetches_total") == 4


async def test_a_reload_held_longer_than_the_first_byte_timeout_is_no_upstream_failure(make_edge, live):
    stream, url = live
    parts(stream, 1)
    client = await make_edge([url], first_byte_timeout=0.2, live_prefetch=0)
    waiting = asyncio.create_task(client.get(PLAYLIST + "?_HLS_msn=0&_HLS_part=1"))
    await asked(stream, PLAYLIST + "?_HLS_msn=0&_HLS_part=1")
    await asyncio.sleep(0.5)  # held at the origin past the first-byte timeout, as a stream does
    parts(stream, 1)
    async with await asyncio.wait_for(waiting, 10) as resp:
        assert resp.status == 200 and listed(await resp.text(), "part_0_1.m4s")
    assert await metric(client, 'reel_edge_upstream_errors_total{origin="' + url + '"}') == 0
    assert (await (await client.get("/healthz")).json())["upstreams"][url] is True


async def test_a_viewer_running_behind_is_answered_by_a_newer_playlist_holding_its_part(make_edge, live):
    stream, url = live
    parts(stream, 5)
    client = await make_edge([url], live_prefetch=0)
    async with client.get(PLAYLIST + "?_HLS_msn=0&_HLS_part=4") as resp:
        assert listed(await resp.text(), "part_0_4.m4s")
    for behind in ("?_HLS_msn=0&_HLS_part=2", "?_HLS_msn=0&_HLS_part=0"):
        async with client.get(PLAYLIST + behind) as resp:
            assert resp.headers["X-Cache"] == "HIT" and listed(await resp.text(), "part_0_4.m4s")
        assert stream.requests[PLAYLIST + behind] == 0
    # A part the newest answer does not hold yet still waits upstream.
    ahead = asyncio.create_task(client.get(PLAYLIST + "?_HLS_msn=0&_HLS_part=5"))
    await asked(stream, PLAYLIST + "?_HLS_msn=0&_HLS_part=5")
    parts(stream, 1)
    async with await asyncio.wait_for(ahead, 10) as resp:
        assert resp.headers["X-Cache"] == "MISS" and listed(await resp.text(), "part_0_5.m4s")
    # A whole segment (no _HLS_part) is held only once a later segment has begun.
    segment = asyncio.create_task(client.get(PLAYLIST + "?_HLS_msn=0"))
    await asked(stream, PLAYLIST + "?_HLS_msn=0")
    parts(stream, 1)
    async with await asyncio.wait_for(segment, 10) as resp:
        assert resp.status == 200 and "\nseg_0.m4s\n" in await resp.text()
