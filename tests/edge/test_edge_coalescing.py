"""Coalescing: one upstream fetch per key, streamed to every waiter as it arrives."""

from __future__ import annotations

import asyncio

import aiohttp

from edge.inflight import Head, Stream
from tests.edge.conftest import VID, metric, pattern

PATH = f"/vod/{VID}/v720/seg_00001.m4s"
BIG = 2 * 1024 * 1024


async def first_bytes_then_rest(client, path: str, arrived: asyncio.Queue):
    """GET `path`; report (response, first bytes) once the first bytes are in; return the body."""
    resp = await client.get(path)
    first = await resp.content.readany()
    await arrived.put((resp, first))
    return resp, first + await resp.content.read()


async def until(read, value: float, within: float = 5.0) -> None:
    """Wait (briefly polling, test side only) until `await read()` equals `value`."""
    async with asyncio.timeout(within):
        while True:
            if await read() == value:
                return
            await asyncio.sleep(0.01)


async def wait_for_first_bytes(arrived: asyncio.Queue, n: int) -> list:
    return [await asyncio.wait_for(arrived.get(), 5) for _ in range(n)]


async def test_twenty_concurrent_misses_make_one_upstream_request(make_edge, upstream):
    steer, url = upstream
    body = steer.add(PATH, pattern(BIG)) and pattern(BIG)
    steer.gate.clear()  # upstream sends its first chunk, then holds the rest
    client = await make_edge([url])
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(20)]

    # Every client has bytes while the upstream is still holding most of the body back:
    # waiters are streamed to, not made to wait for the whole object.
    await wait_for_first_bytes(arrived, 20)
    assert steer.finished[PATH] == 0
    assert steer.requests[PATH] == 1

    steer.gate.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 10)
    assert all(data == body for _, data in results)
    verdicts = sorted(resp.headers["X-Cache"] for resp, _ in results)
    assert verdicts == ["COALESCED"] * 19 + ["MISS"]
    assert all(resp.headers["Content-Length"] == str(BIG) for resp, _ in results)
    assert steer.requests[PATH] == 1

    hit = await client.get(PATH)
    assert hit.headers["X-Cache"] == "HIT" and await hit.read() == body
    assert steer.requests[PATH] == 1
    assert await metric(client, 'reel_edge_requests_total{cache="COALESCED"}') == 19


async def test_leader_disconnect_does_not_cancel_the_shared_fetch(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(BIG))
    steer.gate.clear()
    client = await make_edge([url])
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(5)]
    firsts = await wait_for_first_bytes(arrived, 5)
    leader = next(resp for resp, _ in firsts if resp.headers["X-Cache"] == "MISS")
    leader.close()  # the leader's player goes away mid-body

    steer.gate.set()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    completed = [r for r in done if not isinstance(r, BaseException)]
    assert len([r for r in completed if r[1] == pattern(BIG)]) >= 4
    hit = await client.get(PATH)
    assert hit.headers["X-Cache"] == "HIT"
    assert await hit.read() == pattern(BIG)
    assert steer.requests[PATH] == 1


async def test_failure_mid_body_caches_nothing(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(BIG))
    steer.break_next.add(PATH)
    steer.gate.clear()
    client = await make_edge([url])
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(3)]
    await wait_for_first_bytes(arrived, 3)
    steer.gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    # Every waiter learns its body is incomplete; none is handed a short body as if whole.
    assert all(isinstance(r, aiohttp.ClientPayloadError) for r in results), results
    assert await metric(client, "reel_edge_cache_objects") == 0
    assert await metric(client, f'reel_edge_upstream_errors_total{{origin="{url}"}}') == 1

    again = await client.get(PATH)
    assert again.status == 200 and again.headers["X-Cache"] == "MISS"
    assert await again.read() == pattern(BIG)
    assert steer.requests[PATH] == 2
    assert (await client.get(PATH)).headers["X-Cache"] == "HIT"


async def test_uncacheable_response_is_shared_but_not_stored(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(300_000), cache_control="no-store")
    steer.gate.clear()
    client = await make_edge([url])
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(4)]
    await wait_for_first_bytes(arrived, 4)
    steer.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(data == pattern(300_000) for _, data in results)
    assert steer.requests[PATH] == 1
    assert (await client.get(PATH)).headers["X-Cache"] == "MISS"
    assert steer.requests[PATH] == 2


async def test_waiting_list_is_bounded(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(BIG))
    steer.gate.clear()
    client = await make_edge([url], max_waiters=2)
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(2)]
    await wait_for_first_bytes(arrived, 2)
    over = await client.get(PATH)
    assert over.status == 503
    assert over.headers["Retry-After"] == "1"
    assert over.headers["Content-Type"] == "application/problem+json"
    steer.gate.set()
    assert all(data == pattern(BIG) for _, data in await asyncio.gather(*tasks))


async def test_waiters_time_out_with_504(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(1000))
    steer.stall_head.add(PATH)
    steer.gate.clear()
    client = await make_edge([url], waiter_timeout=0.2)
    responses = await asyncio.gather(*(client.get(PATH) for _ in range(3)))
    assert [r.status for r in responses] == [504, 504, 504]
    assert all(r.headers["Content-Type"] == "application/problem+json" for r in responses)
    assert await metric(client, 'reel_edge_client_timeouts_total{phase="wait"}') == 3
    steer.gate.set()


async def test_head_and_range_requests_join_the_fetch(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, pattern(BIG))
    steer.gate.clear()
    client = await make_edge([url])
    arrived: asyncio.Queue = asyncio.Queue()
    leader = asyncio.create_task(first_bytes_then_rest(client, PATH, arrived))
    await wait_for_first_bytes(arrived, 1)

    # HEAD needs only the head: answered while the body is still held back.
    head = await client.head(PATH)
    assert head.status == 200 and head.headers["X-Cache"] == "COALESCED"
    assert head.headers["Content-Length"] == str(BIG)
    assert await head.read() == b""

    ranged = asyncio.create_task(client.get(PATH, headers={"Range": "bytes=1000000-1000009"}))
    await until(lambda: metric(client, "reel_edge_inflight_readers"), 2)
    steer.gate.set()
    resp = await ranged
    assert resp.status == 206 and resp.headers["X-Cache"] == "COALESCED"
    assert resp.headers["Content-Range"] == f"bytes 1000000-1000009/{BIG}"
    assert await resp.read() == pattern(BIG)[1000000:1000010]
    await leader
    assert steer.requests[PATH] == 1


async def test_too_big_unknown_length_is_streamed_to_every_waiter(make_edge, upstream):
    steer, url = upstream
    body = pattern(600_000)
    steer.add(PATH, body)
    steer.chunked.add(PATH)  # the edge learns it is too big only halfway through
    steer.gate.clear()
    client = await make_edge([url], cache_bytes=1_000_000)  # max object: 125 000 bytes
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(client, PATH, arrived)) for _ in range(3)]
    await wait_for_first_bytes(arrived, 3)
    steer.gate.set()
    results = await asyncio.gather(*tasks)
    assert all(data == body for _, data in results)
    assert sorted(r.headers["X-Cache"] for r, _ in results) == ["COALESCED", "COALESCED", "MISS"]
    assert steer.requests[PATH] == 1
    assert await metric(client, "reel_edge_cache_objects") == 0
    assert (await client.get(PATH)).headers["X-Cache"] == "MISS"


async def test_streamed_through_fetch_stops_when_its_last_reader_leaves(make_edge, upstream):
    steer, url = upstream
    steer.add(PATH, bytes(32 << 20))  # far more than socket buffers and the edge's window
    client = await make_edge([url], cache_bytes=1_000_000)
    resp = await client.get(PATH)
    assert await resp.content.readany()
    resp.close()
    await until(lambda: metric(client, "reel_edge_inflight_fetches"), 0)
    assert steer.finished[PATH] == 0
    assert await metric(client, 'reel_edge_fetches_total{outcome="give_up"}') == 1


async def test_a_sibling_worker_is_served_before_clients():
    """A worker fetching through the key's owner has clients of its own waiting: the owner hands
    it each change before its own clients, so they are not one whole fan-out behind."""
    stream = Stream("vod/x/seg_00001.m4s")
    order: list[str] = []
    for name in ("client 1", "client 2"):
        stream.cursor(lambda name=name: order.append(name))
    stream.cursor(lambda: order.append("sibling"), first=True)
    stream.start(Head(200, (), length=0))
    assert order == ["sibling", "client 1", "client 2"]
