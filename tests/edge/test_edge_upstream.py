"""Upstream choice: failover between origins, passing errors through, the shield tier."""

from __future__ import annotations

from tests.edge.conftest import VID, closed_port_url, metric, pattern

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
