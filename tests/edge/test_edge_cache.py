"""The edge in front of a real origin: hits, misses, the byte bound, ranges and validators."""

from __future__ import annotations

import asyncio

import pytest

from tests.edge.conftest import VID, metric, pattern

SEG = f"vod/{VID}/v360/seg_00001.m4s"


@pytest.fixture
async def seg(store) -> bytes:
    data = pattern(1000)
    await store.write_bytes(SEG, data)
    return data


async def test_miss_then_hit_with_age(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    first = await client.get(f"/{SEG}")
    assert first.status == 200
    assert await first.read() == seg
    assert first.headers["X-Cache"] == "MISS"
    assert first.headers["Age"] == "0"
    second = await client.get(f"/{SEG}")
    assert second.status == 200
    assert await second.read() == seg
    assert second.headers["X-Cache"] == "HIT"
    assert second.headers["Age"] == "0"  # stored under a second ago, by an origin that sent no Age
    for resp in (first, second):
        assert resp.headers["Content-Type"] == "video/iso.segment"
        assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert resp.headers["ETag"].startswith('"')
        assert resp.headers["Content-Length"] == "1000"
        assert resp.headers["Accept-Ranges"] == "bytes"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "X-Cache" in resp.headers["Access-Control-Expose-Headers"]
        assert "Age" in resp.headers["Access-Control-Expose-Headers"]
    assert await metric(client, 'reel_edge_requests_total{cache="MISS"}') == 1
    assert await metric(client, 'reel_edge_requests_total{cache="HIT"}') == 1
    assert await metric(client, "reel_edge_cache_objects") == 1
    assert await metric(client, 'reel_edge_fetches_total{outcome="done"}') == 1


async def test_range_on_cached_and_missing_objects(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    miss = await client.get(f"/{SEG}", headers={"Range": "bytes=10-19"})
    assert miss.status == 206
    assert miss.headers["X-Cache"] == "MISS"
    assert await miss.read() == seg[10:20]
    assert miss.headers["Content-Range"] == "bytes 10-19/1000"
    for spec, start, end in (("bytes=10-19", 10, 20), ("bytes=-5", 995, 1000), ("bytes=5-", 5, 1000)):
        resp = await client.get(f"/{SEG}", headers={"Range": spec})
        assert resp.status == 206, spec
        assert resp.headers["X-Cache"] == "HIT"
        assert await resp.read() == seg[start:end]
        assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/1000"
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=1000-"})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */1000"
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=oops"})
    assert resp.status == 200 and await resp.read() == seg


async def test_if_none_match_304_from_cache(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    etag = (await client.get(f"/{SEG}")).headers["ETag"]
    resp = await client.get(f"/{SEG}", headers={"If-None-Match": etag})
    assert resp.status == 304
    assert resp.headers["X-Cache"] == "HIT"
    assert resp.headers["ETag"] == etag
    assert await resp.read() == b""
    resp = await client.get(f"/{SEG}", headers={"If-None-Match": '"other"'})
    assert resp.status == 200


async def test_head_and_preflight(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    resp = await client.head(f"/{SEG}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1000"
    assert resp.headers["X-Cache"] == "MISS"
    assert await resp.read() == b""
    resp = await client.head(f"/{SEG}")
    assert resp.headers["X-Cache"] == "HIT"
    resp = await client.options(f"/{SEG}", headers={"Access-Control-Request-Method": "GET"})
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Range" in resp.headers["Access-Control-Allow-Headers"]


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/vod/%2e%2e/x",
        f"/vod/{VID}/..%2fmaster.m3u8",
        "/vod/a%00b",
        f"/vod/{VID}//x.m4s",
        "/vod/a\\b",
        "/sources/abcdef123/source",
        "/etc/passwd",
        "/vod/" + "a" * 600,
    ],
)
async def test_bad_paths_never_go_upstream(make_edge, upstream, target):
    steer, url = upstream
    client = await make_edge([url])
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    assert data.split()[1] == b"404"
    assert sum(steer.requests.values()) == 0


async def test_byte_bound_keeps_the_popular_objects(make_edge, origin_url, store):
    bound = 1_000_000  # room for nine of these objects
    for i in range(20):
        await store.write_bytes(f"vod/{VID}/v360/seg_{i:05d}.m4s", pattern(100_000, i))
    client = await make_edge([origin_url], cache_bytes=bound)

    async def get(i: int) -> str:
        resp = await client.get(f"/vod/{VID}/v360/seg_{i:05d}.m4s")
        assert await resp.read() == pattern(100_000, i)
        health = await (await client.get("/healthz")).json()
        assert 0 < health["cache"]["bytes"] <= bound
        return resp.headers["X-Cache"]

    for _ in range(3):  # five popular objects
        for i in range(5):
            await get(i)
    for i in range(5, 20):  # fifteen asked for once: they do not push the popular ones out
        assert await get(i) == "MISS"
    assert [await get(i) for i in range(5)] == ["HIT"] * 5
    assert await metric(client, "reel_edge_evictions_total") == 0
    # A newcomer asked for again and again gets in, in place of a one-off.
    verdicts = [await get(19) for _ in range(4)]
    assert verdicts[0] == "MISS" and verdicts[-1] == "HIT"
    assert await metric(client, "reel_edge_evictions_total") == 1
    assert [await get(i) for i in range(5)] == ["HIT"] * 5


async def test_objects_over_max_size_stream_through(make_edge, origin_url, store):
    big = pattern(300_000)
    await store.write_bytes(SEG, big)
    client = await make_edge([origin_url], cache_bytes=1_000_000)  # max object: 125 000
    for _ in range(2):
        resp = await client.get(f"/{SEG}")
        assert resp.headers["X-Cache"] == "MISS"
        assert await resp.read() == big
    assert await metric(client, "reel_edge_cache_objects") == 0


async def test_healthz_and_metrics(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    await (await client.get(f"/{SEG}")).read()
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok" and health["region"] == "eu"
    assert health["cache"]["objects"] == 1 and health["cache"]["bytes"] > 1000
    text = await (await client.get("/metrics")).text()
    for name in (
        "reel_edge_requests_total",
        "reel_edge_upstream_fetches_total",
        "reel_edge_cache_bytes",
        "reel_edge_cache_objects",
        "reel_edge_evictions_total",
        "reel_edge_bytes_sent_total",
        "reel_edge_request_seconds_bucket",
        "reel_edge_upstream_seconds_bucket",
        "reel_edge_upstream_errors_total",
        "reel_edge_upstream_up",
        "reel_edge_prefetches_total",
        "reel_edge_prefetch_hits_total",
        "reel_edge_purged_objects_total",
        "reel_edge_client_timeouts_total",
        "reel_edge_inflight_fetches",
    ):
        assert name in text, name
    assert f'reel_edge_upstream_fetches_total{{origin="{origin_url}",status="200"}} 1.0' in text
    assert "reel_edge_bytes_sent_total 1000.0" in text


async def test_if_modified_since_and_if_range(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    first = await client.get(f"/{SEG}")
    modified, etag = first.headers["Last-Modified"], first.headers["ETag"]
    resp = await client.get(f"/{SEG}", headers={"If-Modified-Since": modified})
    assert resp.status == 304 and resp.headers["X-Cache"] == "HIT" and "Age" in resp.headers
    resp = await client.get(f"/{SEG}", headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})
    assert resp.status == 200 and await resp.read() == seg
    resp = await client.head(f"/{SEG}", headers={"If-None-Match": etag})
    assert resp.status == 304
    # If-Range: the range applies only while the validator still names this object.
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206 and await resp.read() == seg[:10]
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=0-9", "If-Range": '"stale"'})
    assert resp.status == 200 and await resp.read() == seg


@pytest.mark.parametrize(
    ("method", "target", "status", "x_cache"),
    [
        ("GET", "/nothing-here", 404, "MISS"),  # answers the edge makes itself are MISS
        ("GET", f"/{SEG}", 200, "HIT"),  # asked for once before
        ("HEAD", f"/{SEG}", 200, "HIT"),
        ("DELETE", f"/{SEG}", 405, "MISS"),
        ("PUT", "/elsewhere", 404, "MISS"),
        ("GET", "/healthz", 200, "MISS"),
        ("OPTIONS", f"/{SEG}", 204, "MISS"),
    ],
)
async def test_every_response_has_x_cache_and_age(
    make_edge, origin_url, seg, method, target, status, x_cache
):
    client = await make_edge([origin_url])
    await (await client.get(f"/{SEG}")).read()
    async with client.request(method, target) as resp:
        assert resp.status == status
        assert resp.headers["X-Cache"] == x_cache
        assert resp.headers["Age"] == "0"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        if status >= 400:
            assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_range_416_and_waiters_overflow_keep_edge_headers(make_edge, origin_url, seg):
    client = await make_edge([origin_url])
    await (await client.get(f"/{SEG}")).read()
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=5000-"})
    assert resp.status == 416 and resp.headers["X-Cache"] == "HIT"
    assert (await resp.json())["status"] == 416
