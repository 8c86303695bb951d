"""Private videos at the edge: tokens checked on misses, hits and coalesced waits; one cached copy
for every viewer; public objects untouched; refusals the same whether the video exists."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestServer

import origin.app
from origin.layout import access_key
from reel.playback_token import KeyRing, token_path
from tests.edge.conftest import VID, pattern

RING = KeyRing.parse(json.dumps(KeyRing.generate("k1")))
PUBLIC = "publicvid1"
MASTER = f"/vod/{VID}/master.m3u8"
SEGMENT = f"/vod/{VID}/v360/seg_00001.m4s"


@pytest.fixture
async def private_origin(store) -> AsyncIterator[str]:
    await store.write_bytes(access_key(VID), b"private")
    for path in (MASTER, SEGMENT, f"/vod/{PUBLIC}/master.m3u8"):
        await store.write_bytes(path[1:], pattern(900))
    server = TestServer(origin.app.make_app(store, region="eu", ring=RING))
    await server.start_server()
    yield str(server.make_url("")).rstrip("/")
    await server.close()


def altered(token: str) -> str:
    return token[:-2] + ("yy" if token.endswith("xx") else "xx")


async def get(client, path: str) -> tuple[int, str, str]:
    async with client.get(path) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Cache", ""), resp.headers.get("Content-Type", "")


async def test_tokens_are_checked_on_misses_and_hits(make_edge, private_origin):
    client = await make_edge([private_origin], ring=RING)
    refused = (403, "application/problem+json")
    assert (await get(client, SEGMENT))[::2] == refused  # the first, tokenless, request
    first = await get(client, token_path(SEGMENT, RING.sign(VID, 60)))
    assert first[0] == 200 and first[1] in ("HIT", "COALESCED")  # the tokenless request fetched it
    assert (await get(client, SEGMENT))[::2] == refused  # a hit is no exception
    for token in (RING.sign(VID, -5), RING.sign("otherVideo1", 60), altered(RING.sign(VID, 60))):
        assert (await get(client, token_path(SEGMENT, token)))[::2] == refused
        ghost = token_path(SEGMENT.replace(VID, "nosuchvid"), token)
        assert (await get(client, ghost))[::2] == refused
    assert (await get(client, SEGMENT.replace(VID, "nosuchvid")))[::2] == refused
    assert (await get(client, f"/vod/{PUBLIC}/master.m3u8"))[0] == 200  # public: no token


async def test_many_tokens_one_origin_fetch(make_edge, private_origin):
    client = await make_edge([private_origin], ring=RING)
    answers = await asyncio.gather(*(get(client, token_path(MASTER, RING.sign(VID, 60 + n)))
                                     for n in range(30)))
    assert {status for status, _, _ in answers} == {200}
    assert [x for _, x, _ in answers].count("MISS") == 1


async def test_an_edge_without_a_key_ring_serves_nothing_private(make_edge, private_origin):
    client = await make_edge([private_origin])
    assert (await get(client, token_path(MASTER, RING.sign(VID, 60))))[0] == 403
    assert (await get(client, MASTER))[0] == 403
