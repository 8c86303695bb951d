"""The origin app over real loopback HTTP, on a DirectoryStore and on an S3Store (a real S3 API
server on loopback): validators, conditionals and ranges must behave the same on both."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp.test_utils import TestClient, TestServer

from origin.app import make_app
from origin.s3store import S3Store
from tests.origin.stores import KINDS, make_store

VID = "abcdef123"
SEG = f"vod/{VID}/v360/seg_00001.m4s"
SEG_BYTES = bytes(range(256)) * 4  # 1024 bytes, every offset recognisable
OBJECTS = {
    SEG: SEG_BYTES,
    f"vod/{VID}/master.m3u8": b"#EXTM3U\n",
    f"vod/{VID}/v360/index.m3u8": b"#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXT-X-ENDLIST\n",
    # Still being packaged: an EVENT playlist without its end yet.
    f"vod/{VID}/v240/index.m3u8": b"#EXTM3U\n#EXT-X-PLAYLIST-TYPE:EVENT\n",
    f"vod/{VID}/v360/init.mp4": b"init",
    f"vod/{VID}/thumbs/poster.jpg": b"\xff\xd8jpeg",
    f"vod/{VID}/subs/en.vtt": b"WEBVTT\n",
    f"live/{VID}/v360/index.m3u8": b"#EXTM3U\n",
    f"sources/{VID}/source": b"private upload",
}


@pytest.fixture(params=KINDS)
async def store(request, tmp_path):
    s3 = request.getfixturevalue("s3_env") if request.param == "s3" else None
    async with make_store(request.param, tmp_path, s3) as store:
        yield store


@pytest.fixture
async def client(store):
    for key, data in OBJECTS.items():
        await store.write_bytes(key, data)
    async with TestClient(TestServer(make_app(store, region="eu"))) as client:
        yield client


async def raw_get(client: TestClient, target: str) -> tuple[int, bytes]:
    """Send `target` byte for byte (aiohttp's client would normalise it); (status, body)."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def test_segment_200_with_validators_and_immutable(client):
    resp = await client.get(f"/{SEG}")
    assert resp.status == 200
    assert await resp.read() == SEG_BYTES
    assert resp.headers["Content-Type"] == "video/iso.segment"
    assert resp.headers["Content-Length"] == "1024"
    assert resp.headers["ETag"].startswith('"')
    assert resp.headers["Last-Modified"].endswith("GMT")
    assert resp.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    assert resp.headers["Accept-Ranges"] == "bytes"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "X-Cache" in resp.headers["Access-Control-Expose-Headers"]


@pytest.mark.parametrize(
    "key, ctype, cache",
    [
        (f"vod/{VID}/master.m3u8", "application/vnd.apple.mpegurl", "public, max-age=3600"),
        (f"vod/{VID}/v360/index.m3u8", "application/vnd.apple.mpegurl", "public, max-age=3600"),
        (f"vod/{VID}/v240/index.m3u8", "application/vnd.apple.mpegurl", "public, max-age=1"),
        (f"vod/{VID}/v360/init.mp4", "video/mp4", "public, max-age=31536000, immutable"),
        (f"vod/{VID}/thumbs/poster.jpg", "image/jpeg", "public, max-age=31536000, immutable"),
        (f"vod/{VID}/subs/en.vtt", "text/vtt", "public, max-age=3600"),
        (f"live/{VID}/v360/index.m3u8", "application/vnd.apple.mpegurl", "public, max-age=1"),
    ],
)
async def test_content_types_and_cache_control(client, key, ctype, cache):
    resp = await client.get(f"/{key}")
    assert resp.status == 200
    assert resp.headers["Content-Type"] == ctype
    assert resp.headers["Cache-Control"] == cache
    assert await resp.read() == OBJECTS[key]


@pytest.mark.parametrize(
    "spec, start, end",
    [
        ("bytes=10-19", 10, 20),
        ("bytes=-5", 1019, 1024),
        ("bytes=5-", 5, 1024),
        ("bytes=1000-5000", 1000, 1024),
        ("bytes=-5000", 0, 1024),
    ],
)
async def test_ranges(client, spec, start, end):
    resp = await client.get(f"/{SEG}", headers={"Range": spec})
    assert resp.status == 206
    assert await resp.read() == SEG_BYTES[start:end]
    assert resp.headers["Content-Range"] == f"bytes {start}-{end - 1}/1024"
    assert resp.headers["Content-Length"] == str(end - start)


@pytest.mark.parametrize("spec", ["bytes=1024-", "bytes=5000-6000", "bytes=-0"])
async def test_unsatisfiable_range_416(client, spec):
    resp = await client.get(f"/{SEG}", headers={"Range": spec})
    assert resp.status == 416
    assert resp.headers["Content-Range"] == "bytes */1024"


@pytest.mark.parametrize("spec", ["bytes=abc", "items=0-5", "bytes=9-3", "bytes=0-1,5-9", "bytes=-"])
async def test_malformed_or_multi_range_is_ignored(client, spec):
    resp = await client.get(f"/{SEG}", headers={"Range": spec})
    assert resp.status == 200
    assert await resp.read() == SEG_BYTES


async def test_if_range(client):
    etag = (await client.get(f"/{SEG}")).headers["ETag"]
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=0-9", "If-Range": etag})
    assert resp.status == 206
    resp = await client.get(f"/{SEG}", headers={"Range": "bytes=0-9", "If-Range": '"other"'})
    assert resp.status == 200
    assert await resp.read() == SEG_BYTES


async def test_conditionals_304(client):
    first = await client.get(f"/{SEG}")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for inm in (etag, f'"nope", {etag}', f"W/{etag}", "*"):
        resp = await client.get(f"/{SEG}", headers={"If-None-Match": inm})
        assert resp.status == 304, inm
        assert await resp.read() == b""
        assert resp.headers["ETag"] == etag
    resp = await client.get(f"/{SEG}", headers={"If-None-Match": '"nope"'})
    assert resp.status == 200
    resp = await client.get(f"/{SEG}", headers={"If-Modified-Since": modified})
    assert resp.status == 304
    resp = await client.get(f"/{SEG}", headers={"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert resp.status == 200
    # If-None-Match wins over If-Modified-Since.
    resp = await client.get(f"/{SEG}", headers={"If-None-Match": '"nope"', "If-Modified-Since": modified})
    assert resp.status == 200


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/vod/%2e%2e/x",
        f"/vod/{VID}/..%2fmaster.m3u8",
        f"/vod/{VID}/%2E%2E/{VID}/master.m3u8",
        f"/vod/{VID}/v360/seg_00001.m4s%00",
        f"/vod/{VID}//v360/seg_00001.m4s",
        f"/vod/{VID}\\v360\\seg_00001.m4s",
        f"/vod/{VID}%2fv360%2fseg_00001.m4s",
        f"/sources/{VID}/source",
        "/vod/abc/master.m3u8",
        f"/vod/{VID}/v360/missing.m4s",
        "/etc/passwd",
        "/",
    ],
)
async def test_not_in_layout_is_404(client, target):
    status, body = await raw_get(client, target)
    assert status == 404
    assert b"private upload" not in body and b"root:" not in body


async def test_percent_encoded_ordinary_chars_still_work(client):
    status, body = await raw_get(client, f"/vod/{VID}/v360/seg_0000%31.m4s")
    assert status == 200 and body == SEG_BYTES


async def test_head_has_headers_but_no_body(client):
    resp = await client.head(f"/{SEG}")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == "1024"
    assert resp.headers["Content-Type"] == "video/iso.segment"
    assert await resp.read() == b""


async def test_options_preflight(client):
    resp = await client.options(
        f"/{SEG}",
        headers={"Origin": "https://player.example", "Access-Control-Request-Method": "GET"},
    )
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "GET" in resp.headers["Access-Control-Allow-Methods"]
    assert "Range" in resp.headers["Access-Control-Allow-Headers"]
    assert "Access-Control-Max-Age" in resp.headers


async def test_healthz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "region": "eu"}


async def test_metrics_count_responses(client):
    for _ in range(3):
        assert (await client.get(f"/{SEG}")).status == 200
    await client.get(f"/{SEG}", headers={"Range": "bytes=0-9"})
    await client.get("/vod/nothing-here")
    text = await (await client.get("/metrics")).text()
    assert 'reel_origin_responses_total{kind="segment",status="200"} 3.0' in text
    assert 'reel_origin_responses_total{kind="segment",status="206"} 1.0' in text
    assert 'reel_origin_responses_total{kind="invalid",status="404"} 1.0' in text
    assert f"reel_origin_bytes_sent_total {3 * 1024 + 10}.0" in text
    assert "reel_origin_request_seconds_bucket" in text


async def test_empty_object(store):
    await store.write_bytes(f"vod/{VID}/v360/seg_00002.m4s", b"")
    async with TestClient(TestServer(make_app(store))) as client:
        resp = await client.get(f"/vod/{VID}/v360/seg_00002.m4s")
        assert resp.status == 200 and await resp.read() == b""
        resp = await client.get(f"/vod/{VID}/v360/seg_00002.m4s", headers={"Range": "bytes=0-"})
        assert resp.status == 416


async def test_large_object_streams(store):
    data = bytes(range(256)) * 8192  # 2 MiB: several store chunks
    await store.write_bytes(SEG, data)
    async with TestClient(TestServer(make_app(store))) as client:
        resp = await client.get(f"/{SEG}")
        assert await resp.read() == data
        resp = await client.get(f"/{SEG}", headers={"Range": "bytes=300000-1000000"})
        assert await resp.read() == data[300000:1000001]


async def test_store_failure_is_503_not_500(s3_env):
    """An origin whose bucket cannot be reached says so; an edge then tries another origin."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once the block ends
    store = S3Store("reel-test", "down", endpoint=f"http://127.0.0.1:{port}", max_attempts=1,
                    connect_timeout=1)
    async with TestClient(TestServer(make_app(store))) as client:
        resp = await client.get(f"/{SEG}")
        assert resp.status == 503
        assert resp.headers["Content-Type"] == "application/problem+json"
        assert resp.headers["Retry-After"] == "1"
        assert (await resp.json())["status"] == 503
        assert (await client.head(f"/{SEG}")).status == 503
        # Health says so too, so edges stop choosing this origin before a viewer asks.
        assert (await client.get("/healthz")).status == 503
