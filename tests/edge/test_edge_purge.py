"""POST /purge: authenticated, by path or by prefix, and never undone by a fetch already running."""

from __future__ import annotations

import asyncio

import pytest

from tests.edge.conftest import VID, metric, pattern
from tests.edge.test_edge_coalescing import first_bytes_then_rest, wait_for_first_bytes

TOKEN = "s3cret-purge-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OTHER = "zyxwvu987"


async def warm(client, paths: list[str]) -> None:
    for path in paths:
        async with client.get(path) as resp:
            assert resp.status == 200
            await resp.read()


async def x_cache(client, path: str) -> str:
    async with client.get(path) as resp:
        await resp.read()
        return resp.headers["X-Cache"]


@pytest.fixture
def objects(upstream) -> list[str]:
    steer, _ = upstream
    paths = [f"/vod/{VID}/master.m3u8", f"/vod/{VID}/v360/index.m3u8", f"/vod/{VID}/v360/seg_00001.m4s",
             f"/vod/{OTHER}/master.m3u8"]
    for i, path in enumerate(paths):
        steer.add(path, pattern(700 + i, i))
    return paths


async def test_purge_by_path_and_by_prefix(make_edge, upstream, objects):
    _, url = upstream
    client = await make_edge([url], purge_token=TOKEN)
    await warm(client, objects)
    async with client.post("/purge", json={"paths": [f"/vod/{VID}/master.m3u8"]}, headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"purged": 1}
    assert await x_cache(client, f"/vod/{VID}/master.m3u8") == "MISS"
    assert await x_cache(client, f"/vod/{VID}/v360/index.m3u8") == "HIT"

    # A deleted video: its whole tree goes, other videos stay.
    async with client.post("/purge", json={"prefixes": [f"/vod/{VID}/"], "paths": ["/vod/nothing/x.m4s"]},
                           headers=AUTH) as resp:
        assert resp.status == 200
        assert await resp.json() == {"purged": 3}
    for path in objects[:3]:
        assert await x_cache(client, path) == "MISS"
    assert await x_cache(client, f"/vod/{OTHER}/master.m3u8") == "HIT"
    assert await metric(client, "reel_edge_purged_objects_total") == 4


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"Authorization": "Bearer wrong"}, 401), ({"Authorization": f"Basic {TOKEN}"}, 401)],
)
async def test_purge_needs_the_token(make_edge, upstream, objects, headers, status):
    _, url = upstream
    client = await make_edge([url], purge_token=TOKEN)
    await warm(client, objects)
    async with client.post("/purge", json={"prefixes": ["/vod/"]}, headers=headers) as resp:
        assert resp.status == status
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert (await resp.json())["status"] == status
    assert await x_cache(client, objects[0]) == "HIT"


async def test_purge_is_off_without_a_token(make_edge, upstream, objects):
    _, url = upstream
    client = await make_edge([url])
    async with client.post("/purge", json={"prefixes": ["/vod/"]}, headers=AUTH) as resp:
        assert resp.status == 403
        assert resp.headers["Content-Type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"paths": "/vod/x"}', b'{"paths": [1]}', b'{"prefixes": ["vod/"]}',
     b'{"paths": [' + b'"/a",' * 10_001 + b'"/a"]}'],
)
async def test_bad_purge_requests_are_400(make_edge, upstream, body):
    _, url = upstream
    client = await make_edge([url], purge_token=TOKEN)
    async with client.post("/purge", data=body, headers={**AUTH, "Content-Type": "application/json"}) as resp:
        assert resp.status == 400
        assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_an_empty_purge_purges_nothing(make_edge, upstream, objects):
    _, url = upstream
    client = await make_edge([url], purge_token=TOKEN)
    await warm(client, objects)
    async with client.post("/purge", json={"paths": [], "prefixes": []}, headers=AUTH) as resp:
        assert resp.status == 200 and await resp.json() == {"purged": 0}
    assert await x_cache(client, objects[0]) == "HIT"


async def test_purge_body_is_bounded(make_edge, upstream):
    _, url = upstream
    client = await make_edge([url], purge_token=TOKEN)
    async with client.post("/purge", data=b"x" * (2 << 20), headers=AUTH) as resp:
        assert resp.status == 413


async def test_a_purged_fetch_in_flight_is_not_cached(make_edge, upstream):
    steer, url = upstream
    path = f"/vod/{VID}/v360/seg_00002.m4s"
    steer.add(path, pattern(2 << 20))
    steer.gate.clear()
    client = await make_edge([url], purge_token=TOKEN)
    arrived: asyncio.Queue = asyncio.Queue()
    watcher = asyncio.create_task(first_bytes_then_rest(client, path, arrived))
    await wait_for_first_bytes(arrived, 1)
    async with client.post("/purge", json={"prefixes": [f"/vod/{VID}/"]}, headers=AUTH) as resp:
        assert await resp.json() == {"purged": 1}
    # A request after the purge does not join the old fetch: it starts its own.
    after = asyncio.create_task(first_bytes_then_rest(client, path, arrived))
    await wait_for_first_bytes(arrived, 1)
    assert steer.requests[path] == 2
    steer.gate.set()
    (_, old), (resp, new) = await watcher, await after
    assert old == new == pattern(2 << 20)  # the viewer who asked before the purge still gets it
    assert resp.headers["X-Cache"] == "MISS"
    assert await x_cache(client, path) == "HIT"  # from the new fetch
    assert steer.requests[path] == 2
