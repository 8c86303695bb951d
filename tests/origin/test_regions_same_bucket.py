"""Origins in two regions read the same bucket: `reel origin` processes on one S3 prefix serve the
same bytes under the same validators, so an edge anywhere can revalidate against any origin, and
a delete is gone everywhere at once."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import aiohttp
import pytest

from origin.store import open_store

VID = "region-video1"
KEYS = {
    f"vod/{VID}/master.m3u8": b"#EXTM3U\n#EXT-X-INDEPENDENT-SEGMENTS\n",
    f"vod/{VID}/v360/init.mp4": b"\x00\x00\x00\x18ftypiso6" + bytes(12),
    f"vod/{VID}/v360/seg_00001.m4s": bytes(range(256)) * 4096,  # 1 MiB
}
REGIONS = ("eu-west", "ap-southeast")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def bucket_spec(s3_env) -> str:
    return s3_env.spec(f"regions-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def origins(bucket_spec, tmp_path) -> Iterator[dict[str, str]]:
    """One `reel origin` process per region, all on the same bucket prefix."""
    procs, urls = [], {}
    try:
        for region in REGIONS:
            port = _free_port()
            log = open(tmp_path / f"origin-{region}.log", "wb")  # noqa: SIM115
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "reel", "origin", "--store", bucket_spec, "--region", region,
                 "--port", str(port)], stdout=log, stderr=subprocess.STDOUT))
            log.close()
            urls[region] = f"http://127.0.0.1:{port}"
        _wait_healthy(urls, procs, tmp_path)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_healthy(urls: dict[str, str], procs: list[subprocess.Popen], tmp_path) -> None:
    import urllib.request

    deadline = time.monotonic() + 30
    for region, url in urls.items():
        while True:
            if any(p.poll() is not None for p in procs):
                logs = "\n".join(p.read_text() for p in tmp_path.glob("origin-*.log"))
                raise AssertionError(f"an origin exited:\n{logs}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        break
            assert time.monotonic() < deadline, f"origin {region} never became healthy"
            time.sleep(0.2)


async def test_origins_in_two_regions_serve_one_bucket_identically(bucket_spec, origins):
    async with open_store(bucket_spec) as store:
        for key, data in KEYS.items():
            await store.write_bytes(key, data)
        eu, ap = origins["eu-west"], origins["ap-southeast"]
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as http:
            for region, url in origins.items():
                async with http.get(f"{url}/healthz") as resp:
                    assert (await resp.json())["region"] == region
            for key, data in KEYS.items():
                answers = []
                for url in (eu, ap):
                    async with http.get(f"{url}/{key}") as resp:
                        assert resp.status == 200
                        answers.append((await resp.read(), resp.headers["ETag"],
                                        resp.headers["Last-Modified"], resp.headers["Content-Type"]))
                assert answers[0] == answers[1]
                assert answers[0][0] == data
                etag, modified = answers[0][1], answers[0][2]
                # A validator from one region's origin holds at the other's.
                async with http.get(f"{ap}/{key}", headers={"If-None-Match": etag}) as resp:
                    assert resp.status == 304
                async with http.get(f"{eu}/{key}", headers={"If-Modified-Since": modified}) as resp:
                    assert resp.status == 304
                async with http.get(f"{ap}/{key}", headers={"Range": "bytes=3-9", "If-Range": etag}) as resp:
                    assert resp.status == 206 and await resp.read() == data[3:10]

            # One delete, gone in every region: there is no second copy to expire.
            assert await store.delete_prefix(f"vod/{VID}/") == len(KEYS)
            statuses = await asyncio.gather(*(_status(http, f"{url}/{key}")
                                              for url in (eu, ap) for key in KEYS))
            assert set(statuses) == {404}


async def _status(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url) as resp:
        return resp.status
