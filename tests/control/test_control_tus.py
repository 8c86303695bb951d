"""Resumable uploads over tus 1.0: real clients (tuspy, tus-js-client), cuts, checksums, expiry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from tusclient.client import TusClient
from tusclient.uploader import Uploader

from control.app import DB_KEY, STAGING_KEY
from origin.store import DirectoryStore
from tests.control.conftest import MakeClient, assert_problem, signup, stored_files, video

REPO = Path(__file__).resolve().parents[2]
TUS = {"Tus-Resumable": "1.0.0"}
MiB = 1024 * 1024


def _meta(**values: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items())


async def _source(store: DirectoryStore, video_id: str) -> bytes:
    return b"".join([b async for b in store.read(f"sources/{video_id}/source")])


async def _create(client: TestClient, auth: dict, length: int, **kw) -> aiohttp.ClientResponse:
    headers = {**TUS, **auth, "Upload-Length": str(length), **kw.pop("headers", {})}
    return await client.post("/api/v1/uploads", headers=headers, **kw)


async def _cut_patch(client: TestClient, url: str, auth: dict, data: bytes, offset: int,
                     cut: int) -> None:
    """A PATCH whose connection drops after `cut` bytes of its body, once the server has them
    (dropped sooner, bytes still in the client's buffers would be lost with it)."""
    staged = client.app[STAGING_KEY] / url.rsplit("/", 1)[1]

    async def body():
        yield data[offset:cut]
        for _ in range(1000):
            if staged.stat().st_size >= cut:
                break
            await asyncio.sleep(0.01)
        raise ConnectionResetError("cable pulled")

    with pytest.raises(aiohttp.ClientError):
        await client.patch(url, data=body(), headers={
            **TUS, **auth, "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream"})


async def _offset(client: TestClient, url: str, auth: dict) -> int:
    resp = await client.head(url, headers={**TUS, **auth})
    assert resp.status == 200
    return int(resp.headers["Upload-Offset"])


def _tuspy(endpoint: str, auth: dict, data: bytes, *, url: str | None = None,
           stop_at: int | None = None, **kw) -> Uploader:
    client = TusClient(endpoint, headers=dict(auth))
    uploader = Uploader(file_stream=io.BytesIO(data), client=client, url=url, chunk_size=256 * 1024,
                        metadata={"filename": "holiday.mp4", "title": "Été à Nice"},
                        upload_checksum=True, **kw)
    uploader.upload(stop_at=stop_at)
    return uploader


async def test_tuspy_cut_at_random_offsets_resumes_byte_identical(
        client: TestClient, store: DirectoryStore, alice: dict) -> None:
    data = os.urandom(3 * MiB + 4321)
    endpoint = str(client.make_url("/api/v1/uploads"))
    rng = random.Random(7)
    first_stop = rng.randrange(1, MiB)
    uploader = await asyncio.to_thread(_tuspy, endpoint, alice, data, stop_at=first_stop)
    assert uploader.url.startswith(endpoint)
    url = uploader.url.removeprefix(str(client.make_url("")))
    offset = await _offset(client, url, alice)
    assert offset >= first_stop
    # a cut in the middle of a request keeps what arrived
    cut = rng.randrange(offset + 1, 2 * MiB)
    await _cut_patch(client, url, alice, data, offset, cut)
    for _ in range(500):  # the server notices the drop a moment later
        if await _offset(client, url, alice) == cut:
            break
        await asyncio.sleep(0.02)
    assert await _offset(client, url, alice) == cut
    # a fresh client resumes from the server's offset, to the end
    await asyncio.to_thread(_tuspy, endpoint, alice, data, url=uploader.url)
    status = await (await client.get(url, headers=alice)).json()
    assert status["offset"] == status["length"] == len(data)
    v = await video(client, status["video_id"])
    assert v["title"] == "Été à Nice" and v["state"] == "queued"
    assert await _source(store, v["id"]) == data
    assert not list(client.app[STAGING_KEY].iterdir())  # staging emptied


@pytest.mark.skipif(shutil.which("node") is None
                    or not (REPO / "node_modules" / "tus-js-client").is_dir(),
                    reason="needs node and `npm install tus-js-client`")
@pytest.mark.parametrize("chunk", [None, 300_000])
async def test_tus_js_client_abort_and_resume(client: TestClient, store: DirectoryStore,
                                              alice: dict, tmp_path: Path,
                                              chunk: int | None) -> None:
    data = os.urandom(2 * MiB + 999)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    cut = random.randrange(100_000, 2 * MiB)
    args = ["node", str(Path(__file__).with_name("tus_js_upload.js")),
            str(client.make_url("/api/v1/uploads")), alice["Authorization"].split()[1],
            str(path), str(cut)] + ([str(chunk)] if chunk else [])
    proc = await asyncio.create_subprocess_exec(*args, cwd=REPO, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode == 0, err.decode()
    result = json.loads(out)
    url = result["url"].removeprefix(str(client.make_url("")))
    status = await (await client.get(url, headers=alice)).json()
    assert status["offset"] == len(data)
    assert await _source(store, status["video_id"]) == data
    assert (await video(client, status["video_id"]))["title"] == "tus-js-client upload"


async def test_discovery_and_protocol_errors(client: TestClient, alice: dict,
                                             bob: dict) -> None:
    resp = await client.options("/api/v1/uploads")
    assert resp.status == 204
    assert resp.headers["Tus-Version"] == "1.0.0"
    assert set(resp.headers["Tus-Extension"].split(",")) == {
        "creation", "creation-with-upload", "expiration", "checksum", "termination"}
    assert "sha1" in resp.headers["Tus-Checksum-Algorithm"]
    assert int(resp.headers["Tus-Max-Size"]) == 64 * MiB

    resp = await client.post("/api/v1/uploads", headers={**alice, "Upload-Length": "10"})
    await assert_problem(resp, 412)
    await assert_problem(await _create(client, {}, 10), 401)
    for bad in ("-1", "ten", "1e3", "", "99999999999999999999"):
        await assert_problem(await _create(client, alice, 0, headers={"Upload-Length": bad}), 400)
    await assert_problem(await _create(client, alice, 0), 400)
    await assert_problem(await _create(client, alice, 65 * MiB), 413)
    for meta in (_meta(privacy="secret"), _meta(title="x" * 300), "x" * 8001):
        resp = await _create(client, alice, 10, headers={"Upload-Metadata": meta})
        await assert_problem(resp, 400)
    # as tusd does, pairs that cannot be read are left out; a repeated key keeps its last value
    for meta, kept in (("title !!!notbase64", {}), ("title " + base64.b64encode(b"\xff").decode(), {}),
                       ("a YQ==,a Yg==", {"a": "b"})):
        resp = await _create(client, alice, 10, headers={"Upload-Metadata": meta})
        assert resp.status == 201
        status = await client.get(resp.headers["Location"], headers=alice)
        assert (await status.json())["metadata"] == kept

    resp = await _create(client, alice, 10, headers={"Upload-Metadata": _meta(title="t")})
    assert resp.status == 201
    url = resp.headers["Location"]
    assert resp.headers["Tus-Resumable"] == "1.0.0" and "GMT" in resp.headers["Upload-Expires"]
    patch = {**TUS, **alice, "Content-Type": "application/offset+octet-stream"}
    r = await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "5"})
    assert (await assert_problem(r, 409)) and r.headers["Upload-Offset"] == "0"
    r = await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "0",
                                                      "Content-Type": "text/plain"})
    await assert_problem(r, 415)
    r = await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "0",
                                                      "Upload-Checksum": "crc32 AAAA"})
    await assert_problem(r, 400)
    wrong = base64.b64encode(hashlib.sha1(b"xyz").digest()).decode()
    r = await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "0",
                                                      "Upload-Checksum": f"sha1 {wrong}"})
    assert r.status == 460
    assert await _offset(client, url, alice) == 0
    r = await client.patch(url, data=b"x" * 11, headers={**patch, "Upload-Offset": "0"})
    await assert_problem(r, 413)
    assert await _offset(client, url, alice) == 0
    right = base64.b64encode(hashlib.sha256(b"abc").digest()).decode()
    r = await client.patch(url, data=b"abc", headers={**patch, "Upload-Offset": "0",
                                                      "Upload-Checksum": f"sha256 {right}"})
    assert r.status == 204 and r.headers["Upload-Offset"] == "3"

    # another user's upload does not exist for them
    assert (await client.head(url, headers={**TUS, **bob})).status == 404
    r = await client.patch(url, data=b"d", headers={**patch, **bob, "Upload-Offset": "3"})
    await assert_problem(r, 404)
    await assert_problem(await client.delete(url, headers={**TUS, **bob}), 404)
    assert await _offset(client, url, alice) == 3


async def test_creation_with_upload_and_dedupe(client: TestClient, alice: dict,
                                               store: DirectoryStore) -> None:
    data = os.urandom(10_000)
    resp = await _create(client, alice, len(data), data=data, headers={
        "Content-Type": "application/offset+octet-stream",
        "Upload-Metadata": _meta(filename="beach.mov", tags="sea,sun")})
    assert resp.status == 201
    assert resp.headers["Upload-Offset"] == str(len(data))
    vid = resp.headers["Reel-Video-Id"]
    v = await video(client, vid)
    assert v["title"] == "beach" and v["tags"] == ["sea", "sun"]
    # the same bytes again, in two pieces: the same video back, no second source
    resp = await _create(client, alice, len(data), data=data[:4000], headers={
        "Content-Type": "application/offset+octet-stream"})
    url = resp.headers["Location"]
    r = await client.patch(url, data=data[4000:], headers={
        **TUS, **alice, "Upload-Offset": "4000", "Content-Type": "application/offset+octet-stream"})
    assert r.status == 204 and r.headers["Reel-Video-Id"] == vid
    assert [f for f in stored_files(store) if f.startswith("sources/")] == [
        f"sources/{vid}/source"]
    # a finished upload reports its full offset and refuses more bytes
    assert await _offset(client, url, alice) == len(data)
    r = await client.patch(url, data=b"x", headers={
        **TUS, **alice, "Upload-Offset": str(len(data)),
        "Content-Type": "application/offset+octet-stream"})
    await assert_problem(r, 409)


async def test_termination(client: TestClient, alice: dict) -> None:
    url = (await _create(client, alice, 100)).headers["Location"]
    staging = client.app[STAGING_KEY]
    assert len(list(staging.iterdir())) == 1
    r = await client.delete(url, headers={**TUS, **alice})
    assert r.status == 204
    assert (await client.head(url, headers={**TUS, **alice})).status == 404
    assert list(staging.iterdir()) == []


async def test_quota_counts_uploads_under_way(make_client: MakeClient) -> None:
    client = await make_client(quota_bytes=1000)
    alice = await signup(client)
    assert (await _create(client, alice, 600)).status == 201
    problem = await assert_problem(await _create(client, alice, 600), 413)
    assert "quota" in problem["detail"] and "400 left" in problem["detail"]


async def test_abandoned_uploads_expire_and_are_cleaned(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(upload_expiry_seconds=3600, sweep_seconds=0.05,
                               clock=lambda: now[0])
    alice = await signup(client)
    resp = await _create(client, alice, 100, data=b"x" * 10,
                         headers={"Content-Type": "application/offset+octet-stream"})
    url = resp.headers["Location"]
    staging = client.app[STAGING_KEY]
    now[0] += 3599
    await asyncio.sleep(0.2)  # sweeps come and go: the upload is not expired yet
    assert (await client.head(url, headers={**TUS, **alice})).status == 200
    assert len(list(staging.iterdir())) == 1
    now[0] += 1
    for _ in range(500):  # the next sweep removes it
        if not list(staging.iterdir()):
            break
        await asyncio.sleep(0.02)
    assert (await client.head(url, headers={**TUS, **alice})).status == 404
    assert list(staging.iterdir()) == []
    row = await client.app[DB_KEY].fetchone("SELECT count(*) FROM uploads")
    assert row[0] == 0
