"""Private videos through geo: the 302 and the steered master keep the playback token, geo's
master cache is keyed without it and never serves a guarded master to a tokenless client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

import geo.app
from reel.playback_token import KeyRing
from tests.edge.test_edge_private import altered
from tests.geo.conftest import EdgeServer
from tests.geo.test_geo_app import FAST, start_geo
from tests.geo.test_geo_steering import FROM_LONDON, MASTER_PATH, PACKAGED, VIDEO, get

RING = KeyRing.parse(json.dumps(KeyRing.generate("k1")))


@pytest.fixture
async def client(regions_file: Path, city_db: Path, edges: dict[str, EdgeServer]) -> TestClient:
    for edge in edges.values():
        edge.objects[MASTER_PATH] = PACKAGED
        edge.guarded.add(MASTER_PATH)
    client = await start_geo(geo.app.make_app(regions_file, city_db, ["127.0.0.1"], **FAST,
                                              steering_ttl=3, ring=RING))
    yield client
    await client.close()


async def test_the_steered_master_and_its_manifest_keep_the_token(client, edges) -> None:
    token = RING.sign(VIDEO, 60)
    resp = await get(client, f"/steer/vod/{VIDEO}/~{token}/master.m3u8")
    assert resp.status == 200, await resp.text()
    uris = [line for line in (await resp.text()).splitlines() if "http://" in line]
    assert uris and all(f"/vod/{VIDEO}/~{token}/" in line for line in uris)
    manifest = await get(client, f"/steer/vod/{VIDEO}/~{token}/steering.json?p={FROM_LONDON[0]}")
    clones = json.dumps((await manifest.json())["PATHWAY-CLONES"])
    assert clones.count("http://") > 0 and clones.count("http://") == clones.count(f"/~{token}/")


async def test_a_guarded_master_needs_a_valid_token(client, edges) -> None:
    tokens = [RING.sign(VIDEO, 60 + n) for n in range(5)]
    for token in tokens:  # many viewers, one cached master
        assert (await get(client, f"/steer/vod/{VIDEO}/~{token}/master.m3u8")).status == 200
    assert sum(len(edge.requests) for edge in edges.values()) == 1
    assert all("/~" in path for edge in edges.values() for path in edge.requests)  # geo's own
    for path in (f"/steer/vod/{VIDEO}/master.m3u8",
                 f"/steer/vod/{VIDEO}/~{RING.sign(VIDEO, -1)}/master.m3u8",
                 f"/steer/vod/{VIDEO}/~{RING.sign('otherVideo1', 60)}/master.m3u8",
                 f"/vod/{VIDEO}/~{altered(tokens[0])}/master.m3u8"):
        resp = await get(client, path)
        assert resp.status == 403, path
        assert resp.content_type == "application/problem+json"


async def test_the_302_keeps_the_token(client, edges) -> None:
    token = RING.sign(VIDEO, 60)
    resp = await get(client, f"/vod/{VIDEO}/~{token}/v360/seg_00001.m4s")
    assert resp.status == 302
    assert resp.headers["Location"].endswith(f"/vod/{VIDEO}/~{token}/v360/seg_00001.m4s")
