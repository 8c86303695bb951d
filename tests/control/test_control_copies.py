"""Admin copies of a ready video: how load tests seed a catalog of thousands from one upload."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from origin.store import DirectoryStore
from tests.control.conftest import AUTH, MakeClient, assert_problem, claim, signup, upload, video

ADMIN = "admin@example.com"


async def _ready_video(client: TestClient, store: DirectoryStore, headers: dict[str, str]) -> str:
    vid = (await upload(client, title="Original", headers=headers, tags="orig"))["video"]["id"]
    job = await claim(client)
    assert job is not None and job["video_id"] == vid
    await store.write_bytes(f"vod/{vid}/v360/seg_00001.m4s", b"segment bytes")
    await store.write_bytes(f"vod/{vid}/thumbs/poster.jpg", b"jpeg")
    await store.write_bytes(f"vod/{vid}/master.m3u8", b"#EXTM3U\n")
    resp = await client.post(f"/api/v1/jobs/{job['id']}/complete",
                             json={"duration": 4.0, "renditions": ["v360"]}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    return vid


async def test_admin_copies_a_ready_video_with_new_metadata(make_client: MakeClient,
                                                            store: DirectoryStore) -> None:
    client = await make_client(admin_emails=[ADMIN])
    admin = await signup(client, ADMIN)
    source = await _ready_video(client, store, admin)

    resp = await client.post(f"/api/v1/videos/{source}/copies", headers=admin, json={"copies": [
        {"title": "Tiger documentary", "tags": ["cats", "nature"]},
        {"title": "Guitar lesson", "description": "chords", "category": "music"}]})
    assert resp.status == 201, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    assert [v["title"] for v in items] == ["Tiger documentary", "Guitar lesson"]
    for copy in items:
        assert copy["id"] != source and copy["state"] == "ready" and copy["duration"] == 4.0
        assert copy["progress"] == {"done": 1, "total": 1}  # ready is complete
        assert copy["playback_url"].endswith(f"/vod/{copy['id']}/master.m3u8")
        assert copy == await video(client, copy["id"])
        for key in ("master.m3u8", "v360/seg_00001.m4s", "thumbs/poster.jpg"):
            original = b"".join([c async for c in store.read(f"vod/{source}/{key}")])
            assert b"".join([c async for c in store.read(f"vod/{copy['id']}/{key}")]) == original
    assert items[0]["tags"] == ["cats", "nature"] and items[1]["tags"] == ["orig"]
    found = await (await client.get("/api/v1/search", params={"q": "tiger"})).json()
    assert [v["id"] for v in found["items"]] == [items[0]["id"]]

    # A copy is a video like any other: deleting it leaves the original whole.
    assert (await client.delete(f"/api/v1/videos/{items[0]['id']}", headers=admin)).status == 204
    assert await store.stat(f"vod/{source}/v360/seg_00001.m4s") is not None
    assert await store.stat(f"vod/{items[0]['id']}/master.m3u8") is None


async def test_copies_are_for_admins_of_ready_videos_only(make_client: MakeClient,
                                                          store: DirectoryStore) -> None:
    client = await make_client(admin_emails=[ADMIN])
    admin = await signup(client, ADMIN)
    alice = await signup(client, "alice@example.com")
    source = await _ready_video(client, store, alice)
    body = {"copies": [{"title": "Mine now"}]}
    url = f"/api/v1/videos/{source}/copies"
    await assert_problem(await client.post(url, json=body), 401)
    await assert_problem(await client.post(url, headers=alice, json=body), 403)
    await assert_problem(await client.post("/api/v1/videos/nosuchvideo/copies", headers=admin,
                                           json=body), 404)
    for bad in ({}, {"copies": []}, {"copies": [{"title": ""}]}, {"copies": ["x"]},
                {"copies": [{"title": "t"}] * 101}, {"copies": [{"privacy": "secret"}]}):
        await assert_problem(await client.post(url, headers=admin, json=bad), 400)
    queued = (await upload(client, headers=alice))["video"]["id"]
    await assert_problem(await client.post(f"/api/v1/videos/{queued}/copies", headers=admin,
                                           json=body), 409)
    mine = await (await client.get(f"/api/v1/users/{(await video(client, source))['owner_id']}"
                                   "/videos")).json()
    assert len(mine["items"]) == 2  # nothing was copied by the refused requests
