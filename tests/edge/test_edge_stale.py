"""Freshness as the upstream states it, refreshes, and stale copies standing in for a failing origin.

An upstream `Age` equal to `max-age` makes an object stale the moment it arrives, so these tests
need no sleeping: the next request already finds it expired.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.edge.conftest import VID, metric, pattern
from tests.edge.test_edge_coalescing import until

PATH = f"/vod/{VID}/v360/index.m3u8"


async def get(client, path: str = PATH, **kw) -> tuple[int, str, bytes]:
    async with client.get(path, **kw) as resp:
        return resp.status, resp.headers["X-Cache"], await resp.read()


@pytest.mark.parametrize(
    ("cache_control", "extra", "cached"),
    [
        ("public, max-age=60", {}, True),
        ("public, s-maxage=60, max-age=0", {}, True),  # s-maxage is the shared cache's
        ("public, max-age=0, s-maxage=0", {}, False),
        ("public, immutable", {}, True),  # immutable and no lifetime: the origin's year
        ("no-store", {}, False),
        ("private, max-age=60", {}, False),
        ("public", {"Expires": "Thu, 01 Jan 2099 00:00:00 GMT"}, True),
        ("public", {"Expires": "Thu, 01 Jan 1970 00:00:00 GMT"}, False),
        ("public", {"Expires": "not a date"}, False),
        ("public", {}, False),  # no explicit freshness: no guessing
        ("public, max-age=abc", {}, False),
        ("public, max-age=60", {"Set-Cookie": "a=b"}, False),
    ],
)
async def test_cache_control_decides_what_is_kept(make_edge, upstream, cache_control, extra, cached):
    steer, url = upstream
    steer.add(PATH, pattern(900), cache_control, **extra)
    client = await make_edge([url])
    assert (await get(client))[:2] == (200, "MISS")
    status, x_cache, body = await get(client)
    assert status == 200 and body == pattern(900)
    assert x_cache == ("HIT" if cached else "MISS")
    assert steer.requests[PATH] == (1 if cached else 2)


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60, stale-while-revalidate=30", Age="60")
    client = await make_edge([url])
    assert (await get(client))[1] == "MISS"
    # Twenty viewers of the expired playlist get it at once; one refresh goes upstream behind them.
    results = await asyncio.gather(*(get(client) for _ in range(20)))
    assert {(status, x_cache, body) for status, x_cache, body in results} == {(200, "STALE", pattern(900))}
    await until(lambda: asyncio.sleep(0, steer.revalidations[PATH]), 1)
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert steer.requests[PATH] == 2  # the first fetch and the one refresh (a 304)
    status, x_cache, body = await get(client)
    assert (status, x_cache, body) == (200, "HIT", pattern(900))
    assert await metric(client, 'reel_edge_requests_total{cache="STALE"}') == 20


async def test_expired_entry_refresh_is_coalesced_and_revalidated(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60, stale-while-revalidate=0", Age="60")
    client = await make_edge([url])
    await get(client)
    steer.gate.clear()  # hold the refresh until every request has joined it
    steer.stall_head.add(PATH)
    tasks = [asyncio.create_task(get(client)) for _ in range(20)]
    await until(lambda: metric(client, "reel_edge_inflight_readers"), 20)
    steer.gate.set()
    results = await asyncio.gather(*tasks)
    assert {(status, body) for status, _, body in results} == {(200, pattern(900))}
    assert sorted(x for _, x, _ in results) == ["COALESCED"] * 19 + ["MISS"]
    assert steer.requests[PATH] == 2 and steer.revalidations[PATH] == 1
    assert (await get(client))[1] == "HIT"


@pytest.mark.parametrize("trouble", ["503", "down", "timeout"])
async def test_stale_if_error_when_the_origin_fails(make_edge, upstream, trouble):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60, stale-while-revalidate=0, stale-if-error=600",
              Age="60")
    client = await make_edge([url], first_byte_timeout=0.3, connect_timeout=0.3)
    assert (await get(client))[1] == "MISS"
    if trouble == "503":
        steer.fail[PATH] = 503
    elif trouble == "timeout":
        steer.gate.clear()
        steer.stall_head.add(PATH)
    else:
        await steer.server.close()  # connection refused from now on
    status, x_cache, body = await get(client)
    assert (status, x_cache, body) == (200, "STALE", pattern(900))
    assert await metric(client, 'reel_edge_requests_total{cache="STALE"}') == 1
    steer.gate.set()


async def test_default_stale_if_error_for_origins_that_say_nothing(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60", Age="60")
    client = await make_edge([url], stale_while_revalidate=0)
    await get(client)
    steer.fail[PATH] = 500
    assert await get(client) == (200, "STALE", pattern(900))

    strict = await make_edge([url], stale_while_revalidate=0, stale_if_error=0)
    del steer.fail[PATH]
    await get(strict)
    steer.fail[PATH] = 500
    status, x_cache, _ = await get(strict)
    assert (status, x_cache) == (500, "MISS")  # no stale allowed: the origin's answer goes through


async def test_must_revalidate_never_serves_stale(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60, must-revalidate", Age="60")
    client = await make_edge([url])
    await get(client)
    steer.fail[PATH] = 503
    status, x_cache, _ = await get(client)
    assert (status, x_cache) == (503, "MISS")


async def test_no_cache_is_kept_but_revalidated_every_time(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, no-cache")
    client = await make_edge([url])
    for _ in range(3):
        assert await get(client) == (200, "MISS", pattern(900))
    assert steer.requests[PATH] == 3 and steer.revalidations[PATH] == 2


async def test_a_new_answer_that_may_not_be_kept_replaces_the_stale_copy(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(900), "public, max-age=60, stale-while-revalidate=0", Age="60")
    client = await make_edge([url])
    await get(client)
    steer.add(PATH, pattern(500, 1), "no-store")  # the origin changed its mind
    assert await get(client) == (200, "MISS", pattern(500, 1))
    steer.fail[PATH] = 503
    assert (await get(client))[:2] == (503, "MISS")  # the old copy is gone, not served stale
