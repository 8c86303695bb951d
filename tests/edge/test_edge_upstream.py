"""Upstream choice: failover between origins, passing errors through, the shield tier."""

from __future__ import annotations

import asyncio

import pytest

from edge.upstream import ConfigError, origins_nearest
from tests.edge.conftest import VID, closed_port_url, metric, pattern
from tests.edge.test_edge_coalescing import first_bytes_then_rest, until, wait_for_first_bytes

SEG = f"vod/{VID}/v360/seg_00001.m4s"


async def test_failover_to_the_next_origin(make_edge, origin_url, store):
    await store.write_bytes(SEG, pattern(5000))
    dead = closed_port_url()
    client = await make_edge([dead, origin_url], connect_timeout=1.0)
    resp = await client.get(f"/{SEG}")
    assert resp.status == 200
    assert await resp.read() == pattern(5000)
    assert await metric(client, f'reel_edge_upstream_errors_total{{origin="{dead}"}}') == 1
    assert (await client.get(f"/{SEG}")).headers["X-Cache"] == "HIT"


async def test_all_upstreams_down_is_502_problem(make_edge):
    client = await make_edge([closed_port_url(), closed_port_url()], connect_timeout=1.0)
    resp = await client.get(f"/{SEG}")
    assert resp.status == 502
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert (await resp.json())["status"] == 502
    assert resp.headers["X-Cache"] == "MISS"


async def test_upstream_404_passes_through_and_is_not_cached(make_edge, upstream):
    steer, url = upstream
    client = await make_edge([url])
    path = f"/vod/{VID}/v360/missing.m4s"
    for expected_requests in (1, 2):
        resp = await client.get(path)
        assert resp.status == 404
        assert resp.headers["X-Cache"] == "MISS"
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert steer.requests[path] == expected_requests
    assert await metric(client, "reel_edge_cache_objects") == 0


async def test_origin_404_via_real_origin(make_edge, origin_url):
    client = await make_edge([origin_url])
    resp = await client.get(f"/vod/{VID}/master.m3u8")
    assert resp.status == 404


async def test_shield_is_used_instead_of_origins(make_edge, origin_url, store):
    await store.write_bytes(SEG, pattern(5000))
    shield = await make_edge([origin_url])
    shield_url = str(shield.make_url("")).rstrip("/")
    child = await make_edge([closed_port_url()], shield=shield_url)
    first = await child.get(f"/{SEG}")
    assert first.status == 200 and await first.read() == pattern(5000)
    assert first.headers["X-Cache"] == "MISS"
    # The shield now has it: a second child edge is a MISS locally but a HIT at the shield.
    other = await make_edge([closed_port_url()], shield=shield_url)
    resp = await other.get(f"/{SEG}")
    assert await resp.read() == pattern(5000)
    assert await metric(shield, 'reel_edge_requests_total{cache="HIT"}') == 1
    assert await metric(shield, 'reel_edge_requests_total{cache="MISS"}') == 1


async def test_failover_on_5xx_and_timeout_within_one_request(make_edge, upstream, origin_url, store):
    steer, url = upstream
    await store.write_bytes(SEG, pattern(5000))
    steer.add(f"/{SEG}", pattern(5000))
    steer.fail[f"/{SEG}"] = 503
    client = await make_edge([url, origin_url])
    resp = await client.get(f"/{SEG}")
    assert resp.status == 200 and await resp.read() == pattern(5000)
    assert await metric(client, f'reel_edge_upstream_fetches_total{{origin="{url}",status="503"}}') == 1

    other = f"vod/{VID}/v360/seg_00002.m4s"
    await store.write_bytes(other, pattern(6000))
    steer.add(f"/{other}", pattern(1))
    steer.stall_head.add(f"/{other}")
    steer.gate.clear()
    client = await make_edge([url, origin_url], first_byte_timeout=0.3)
    resp = await client.get(f"/{other}")
    assert resp.status == 200 and await resp.read() == pattern(6000)
    assert await metric(client, f'reel_edge_upstream_errors_total{{origin="{url}"}}') == 1
    steer.gate.set()


async def test_last_upstreams_5xx_passes_through(make_edge, upstream):
    steer, url = upstream
    steer.add(f"/{SEG}", pattern(10))
    steer.fail[f"/{SEG}"] = 503
    client = await make_edge([closed_port_url(), url])
    resp = await client.get(f"/{SEG}")
    assert resp.status == 503 and resp.headers["X-Cache"] == "MISS"


async def test_failing_upstream_is_skipped_after_two_failures(make_edge, upstream):
    steer, url = upstream
    dead = closed_port_url()
    for n in range(5):
        steer.add(f"/vod/{VID}/v360/seg_{n:05d}.m4s", pattern(100, n))
    client = await make_edge([dead, url])
    for n in range(5):
        resp = await client.get(f"/vod/{VID}/v360/seg_{n:05d}.m4s")
        assert resp.status == 200 and await resp.read() == pattern(100, n)
    # Two failures mark it down; after that it is tried last, so not at all while `url` answers.
    assert await metric(client, f'reel_edge_upstream_errors_total{{origin="{dead}"}}') == 2
    assert await metric(client, f'reel_edge_upstream_up{{origin="{dead}"}}') == 0
    assert await metric(client, f'reel_edge_upstream_up{{origin="{url}"}}') == 1


async def test_health_checks_take_an_upstream_out_and_back(make_edge, upstream, origin_url, store):
    steer, url = upstream
    await store.write_bytes(SEG, pattern(700))
    steer.add(f"/{SEG}", pattern(700))
    steer.healthy = False
    client = await make_edge([url, origin_url], health_interval=0.05)
    up = f'reel_edge_upstream_up{{origin="{url}"}}'
    await until(lambda: metric(client, up), 0)
    resp = await client.get(f"/{SEG}")
    assert resp.status == 200 and await resp.read() == pattern(700)
    assert steer.requests[f"/{SEG}"] == 0  # the nearest was down: the next one answered
    steer.healthy = True
    await until(lambda: metric(client, up), 1)
    assert steer.probes >= 4


async def test_shield_down_falls_back_to_the_origins(make_edge, origin_url, store):
    await store.write_bytes(SEG, pattern(5000))
    child = await make_edge([origin_url], shield=closed_port_url())
    resp = await child.get(f"/{SEG}")
    assert resp.status == 200 and await resp.read() == pattern(5000)


async def test_a_region_makes_one_origin_fetch_through_its_shield(make_edge, upstream):
    steer, url = upstream
    steer.add(f"/{SEG}", pattern(BIG := 1 << 20))
    steer.gate.clear()
    shield = await make_edge([url])
    shield_url = str(shield.make_url("")).rstrip("/")
    edges = [await make_edge([url], shield=shield_url) for _ in range(3)]
    arrived: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(first_bytes_then_rest(e, f"/{SEG}", arrived))
             for e in edges for _ in range(5)]
    await wait_for_first_bytes(arrived, 15)
    steer.gate.set()
    assert all(body == pattern(BIG) for _, body in await asyncio.gather(*tasks))
    assert steer.requests[f"/{SEG}"] == 1


def test_origins_nearest_first_from_a_regions_file(tmp_path):
    regions = tmp_path / "regions.toml"
    regions.write_text(
        'default = "us-east"\n'
        '[regions.us-east]\nlat = 40.7\nlon = -74.0\nedges = ["http://e1"]\norigins = ["http://o-us"]\n'
        '[regions.ap-south]\nlat = 19.1\nlon = 72.9\nedges = ["http://e2"]\norigins = ["http://o-ap"]\n'
        '[regions.eu-west]\nlat = 51.5\nlon = -0.1\nedges = ["http://e3"]\norigins = ["http://o-eu"]\n'
    )
    assert origins_nearest(regions, "eu-west") == ["http://o-eu", "http://o-us", "http://o-ap"]
    assert origins_nearest(regions, "ap-south") == ["http://o-ap", "http://o-eu", "http://o-us"]
    with pytest.raises(ConfigError, match="no region 'mars'"):
        origins_nearest(regions, "mars")
    with pytest.raises(ConfigError):
        origins_nearest(tmp_path / "missing.toml", "eu-west")
