"""Uploads: multipart streamed to the store, limits, and the video they create."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator

from aiohttp import MultipartWriter, hdrs
from aiohttp.test_utils import TestClient

from control.app import DB_KEY
from origin.store import DirectoryStore
from tests.control.conftest import MakeClient, assert_problem, form, signup, stored_files, video

MiB = 1024 * 1024


async def _read_object(store: DirectoryStore, key: str) -> bytes:
    return b"".join([block async for block in store.read(key)])


async def _row_count(client: TestClient, table: str) -> int:
    row = await client.app[DB_KEY].fetchone(f"SELECT count(*) FROM {table}")
    return row[0]


async def test_upload_streams_to_store_and_queues(client: TestClient,
                                                  store: DirectoryStore, alice: dict[str, str]) -> None:
    data = os.urandom(3 * MiB + 123)
    resp = await client.post("/api/v1/videos", headers=alice, data=form(data, "My first clip"))
    assert resp.status == 202, await resp.text()
    body = await resp.json()
    vid = body["video"]
    assert len(vid["id"]) == 12
    assert body["job"]["id"]
    assert resp.headers["Location"] == f"/api/v1/videos/{vid['id']}"
    assert vid["state"] == "queued"
    assert vid["title"] == "My first clip"
    assert vid["playback_url"] is None and vid["poster_url"] is None
    assert vid["reason"] is None and vid["progress"] is None and vid["duration"] is None
    assert vid["watch_url"] == f"http://{client.host}:{client.port}/watch/{vid['id']}"
    assert vid["created_at"].endswith("Z")

    stored = await _read_object(store, f"sources/{vid['id']}/source")
    assert hashlib.sha256(stored).digest() == hashlib.sha256(data).digest()

    again = await video(client, vid["id"])
    assert again == vid


async def test_chunked_upload_file_before_title(client: TestClient,
                                                store: DirectoryStore, alice: dict[str, str]) -> None:
    """No Content-Length anywhere, the file first: the title part after it still counts."""
    blocks = [os.urandom(200_000) for _ in range(10)]

    async def body() -> AsyncIterator[bytes]:
        for block in blocks:
            yield block

    with MultipartWriter("form-data") as mp:
        part = mp.append(body())
        part.set_content_disposition("form-data", name="file", filename="late title.mov")
        mp.append("Title after file").set_content_disposition("form-data", name="title")
    resp = await client.post("/api/v1/videos", headers=alice, data=mp)
    assert resp.status == 202, await resp.text()
    vid = (await resp.json())["video"]
    assert vid["title"] == "Title after file"
    assert await _read_object(store, f"sources/{vid['id']}/source") == b"".join(blocks)


async def test_title_defaults_to_file_name(client: TestClient, alice: dict[str, str]) -> None:
    resp = await client.post("/api/v1/videos", headers=alice, data=form(b"x" * 1000, None, "holiday.mp4"))
    assert resp.status == 202
    assert (await resp.json())["video"]["title"] == "holiday"


async def test_over_limit_streamed_is_413_and_leaves_nothing(make_client: MakeClient,
                                                             store: DirectoryStore) -> None:
    client = await make_client(max_upload_bytes=1 * MiB)
    alice = await signup(client)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(6):
            yield b"z" * (512 * 1024)

    with MultipartWriter("form-data") as mp:
        mp.append("too big").set_content_disposition("form-data", name="title")
        part = mp.append(body())
        part.set_content_disposition("form-data", name="file", filename="big.mp4")
    resp = await client.post("/api/v1/videos", headers=alice, data=mp)
    problem = await assert_problem(resp, 413)
    assert "exceeds the 1 MiB limit" in problem["detail"]
    assert stored_files(store) == []
    assert await _row_count(client, "videos") == 0
    assert await _row_count(client, "jobs") == 0


async def test_content_length_over_limit_is_413(make_client: MakeClient,
                                                store: DirectoryStore) -> None:
    client = await make_client(max_upload_bytes=1 * MiB)
    alice = await signup(client)
    resp = await client.post("/api/v1/videos", headers=alice, data=form(b"y" * (2 * MiB)))
    problem = await assert_problem(resp, 413)
    assert problem["detail"] == "upload exceeds the 1 MiB limit"
    assert stored_files(store) == []
    assert await _row_count(client, "videos") == 0


async def test_expect_continue_refused_before_body(make_client: MakeClient) -> None:
    client = await make_client(max_upload_bytes=1 * MiB)
    alice = await signup(client)
    resp = await client.post("/api/v1/videos", headers=alice, data=form(b"y" * (2 * MiB)), expect100=True)
    await assert_problem(resp, 413)
    ok = await client.post("/api/v1/videos", headers=alice, data=form(b"y" * 1000), expect100=True)
    assert ok.status == 202


async def test_missing_file_part_is_400(client: TestClient, store: DirectoryStore,
                                        alice: dict[str, str]) -> None:
    with MultipartWriter("form-data") as mp:
        mp.append("only a title").set_content_disposition("form-data", name="title")
    problem = await assert_problem(await client.post("/api/v1/videos", headers=alice, data=mp), 400)
    assert "file" in problem["detail"]
    assert stored_files(store) == []


async def test_empty_file_is_400(client: TestClient, store: DirectoryStore, alice: dict[str, str]) -> None:
    problem = await assert_problem(await client.post("/api/v1/videos", headers=alice, data=form(b"")), 400)
    assert "empty upload" in problem["detail"]
    assert stored_files(store) == []
    assert await _row_count(client, "videos") == 0


async def test_bad_title_after_file_leaves_nothing(client: TestClient,
                                                   store: DirectoryStore, alice: dict[str, str]) -> None:
    with MultipartWriter("form-data") as mp:
        mp.append(b"media" * 1000).set_content_disposition("form-data", name="file",
                                                            filename="a.mp4")
        mp.append("t" * 500).set_content_disposition("form-data", name="title")
    await assert_problem(await client.post("/api/v1/videos", headers=alice, data=mp), 400)
    assert stored_files(store) == []
    assert await _row_count(client, "videos") == 0


async def test_not_multipart_is_415(client: TestClient, alice: dict[str, str]) -> None:
    resp = await client.post("/api/v1/videos", headers=alice, json={"title": "x"})
    await assert_problem(resp, 415)
    resp = await client.post("/api/v1/videos", data=b"raw bytes",
                             headers={**alice, hdrs.CONTENT_TYPE: "application/octet-stream"})
    await assert_problem(resp, 415)


async def test_malformed_multipart_is_400(client: TestClient, store: DirectoryStore,
                                          alice: dict[str, str]) -> None:
    resp = await client.post("/api/v1/videos", data=b"not a multipart body at all",
                             headers={**alice, hdrs.CONTENT_TYPE: "multipart/form-data; boundary=xyz"})
    await assert_problem(resp, 400)
    resp = await client.post("/api/v1/videos", data=b"--",
                             headers={**alice, hdrs.CONTENT_TYPE: "multipart/form-data"})
    await assert_problem(resp, 400)
    assert stored_files(store) == []


async def test_unknown_video_is_404_problem(client: TestClient) -> None:
    await assert_problem(await client.get("/api/v1/videos/doesnotexist"), 404)
    await assert_problem(await client.get("/api/v1/videos/..%2F..%2Fetc"), 404)
    await assert_problem(await client.get("/api/v1/videos/x"), 404)


async def test_upload_metrics(client: TestClient, alice: dict[str, str]) -> None:
    await client.post("/api/v1/videos", headers=alice, data=form(b"a" * 5000))
    await client.post("/api/v1/videos", headers=alice, data=form(b""))
    text = await (await client.get("/metrics")).text()
    assert 'reel_control_uploads_total{result="accepted"} 1.0' in text
    assert 'reel_control_uploads_total{result="empty"} 1.0' in text
    assert "reel_control_upload_bytes_total 5000.0" in text
    assert 'reel_control_jobs{state="queued"} 1.0' in text
    assert "reel_control_request_seconds_bucket" in text
