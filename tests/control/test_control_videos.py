"""Videos: metadata, ownership, privacy, a creator's list, dedupe, quota, delete with edge purge."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from origin.store import DirectoryStore
from tests.control.conftest import (
    AUTH,
    MakeClient,
    assert_problem,
    claim,
    form,
    signup,
    stored_files,
    upload,
    video,
)


async def test_metadata_at_upload_and_edit(client: TestClient, alice: dict[str, str]) -> None:
    up = await upload(client, title="Café à Paris", headers=alice, description="Long\ntext",
                      tags="paris, café ,food", language="fr", category="travel",
                      privacy="unlisted")
    v = up["video"]
    assert (v["title"], v["description"], v["tags"]) == ("Café à Paris", "Long\ntext",
                                                         ["paris", "café", "food"])
    assert (v["language"], v["category"], v["privacy"]) == ("fr", "travel", "unlisted")
    me = await (await client.get("/api/v1/me", headers=alice)).json()
    assert v["owner_id"] == me["id"]

    resp = await client.patch(f"/api/v1/videos/{v['id']}", headers=alice, json={
        "title": "Paris", "tags": ["a", "b"], "privacy": "public", "language": None})
    assert resp.status == 200, await resp.text()
    edited = await video(client, v["id"])
    assert (edited["title"], edited["tags"], edited["privacy"], edited["language"]) == (
        "Paris", ["a", "b"], "public", None)
    assert edited["description"] == "Long\ntext"  # untouched


async def test_bad_metadata_is_400_and_changes_nothing(client: TestClient,
                                                       alice: dict[str, str]) -> None:
    vid = (await upload(client, title="Keep me", headers=alice))["video"]["id"]
    for body in ({}, {"title": ""}, {"title": 7}, {"tags": "a" * 41}, {"tags": [1]},
                 {"privacy": "secret"}, {"category": "nope"}, {"language": "english!"},
                 {"title": "x" * 201}, {"description": "\x1b[31mred"},
                 {"tags": [str(i) for i in range(21)]}):
        resp = await client.patch(f"/api/v1/videos/{vid}", headers=alice, json=body)
        await assert_problem(resp, 400)
    assert (await video(client, vid))["title"] == "Keep me"
    resp = await client.post("/api/v1/videos", headers=alice,
                             data=_with(privacy="nope"))
    await assert_problem(resp, 400)


def _with(**fields: str):
    fd = form(os.urandom(100), "t")
    for k, v in fields.items():
        fd.add_field(k, v)
    return fd


async def test_only_the_owner_or_an_admin_changes(make_client: MakeClient,
                                                  store: DirectoryStore) -> None:
    client = await make_client(admin_emails=["admin@example.com"])
    alice = await signup(client, "alice@example.com")
    bob = await signup(client, "bob@example.com")
    admin = await signup(client, "admin@example.com")
    vid = (await upload(client, headers=alice))["video"]["id"]
    await assert_problem(await client.patch(f"/api/v1/videos/{vid}", json={"title": "mine"},
                                            headers=bob), 403)
    await assert_problem(await client.delete(f"/api/v1/videos/{vid}", headers=bob), 403)
    await assert_problem(await client.patch(f"/api/v1/videos/{vid}", json={"title": "x"}), 401)
    await assert_problem(await client.delete(f"/api/v1/videos/{vid}"), 401)
    assert (await video(client, vid))["title"] == "A clip"
    resp = await client.patch(f"/api/v1/videos/{vid}", json={"title": "moderated"}, headers=admin)
    assert resp.status == 200
    assert (await client.delete(f"/api/v1/videos/{vid}", headers=admin)).status == 204


async def test_private_videos_are_absent_to_others(client: TestClient, alice: dict[str, str],
                                                   bob: dict[str, str]) -> None:
    vid = (await upload(client, headers=alice, privacy="private"))["video"]["id"]
    assert (await client.get(f"/api/v1/videos/{vid}", headers=alice)).status == 200
    await assert_problem(await client.get(f"/api/v1/videos/{vid}", headers=bob), 404)
    await assert_problem(await client.get(f"/api/v1/videos/{vid}"), 404)
    assert (await client.get(f"/watch/{vid}")).status == 404
    await assert_problem(await client.patch(f"/api/v1/videos/{vid}", json={"title": "x"},
                                            headers=bob), 404)


async def test_creator_listing_newest_first_with_cursor(client: TestClient,
                                                        alice: dict[str, str]) -> None:
    ids = [(await upload(client, title=f"v{i}", headers=alice,
                         privacy="private" if i == 2 else "public"))["video"]["id"]
           for i in range(5)]
    me = (await (await client.get("/api/v1/me", headers=alice)).json())["id"]
    seen, cursor = [], None
    while True:
        url = f"/api/v1/users/{me}/videos?limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = await (await client.get(url, headers=alice)).json()
        seen += [v["id"] for v in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert seen == ids[::-1]
    public = await (await client.get(f"/api/v1/users/{me}/videos")).json()
    assert [v["id"] for v in public["items"]] == [i for i in ids[::-1] if i != ids[2]]
    await assert_problem(await client.get(f"/api/v1/users/{me}/videos?cursor=forged"), 400)
    await assert_problem(await client.get(f"/api/v1/users/{me}/videos?limit=0"), 400)
    await assert_problem(await client.get(f"/api/v1/users/{me}/videos?limit=abc"), 400)
    await assert_problem(await client.get("/api/v1/users/nobody/videos"), 404)


async def test_same_content_same_user_gets_the_same_video(client: TestClient,
                                                          alice: dict[str, str],
                                                          bob: dict[str, str],
                                                          store: DirectoryStore) -> None:
    data = os.urandom(50_000)
    first = await upload(client, data, "first", headers=alice)
    resp = await client.post("/api/v1/videos", data=form(data, "again"), headers=alice)
    assert resp.status == 200
    again = await resp.json()
    assert again["duplicate"] is True and again["job"] is None
    assert again["video"]["id"] == first["video"]["id"]
    assert again["video"]["title"] == "first"
    # another user's identical upload is their own video
    other = await upload(client, data, "bob's", headers=bob)
    assert other["video"]["id"] != first["video"]["id"]
    assert len([f for f in stored_files(store) if f.startswith("sources/")]) == 2


async def test_quota_is_413_with_a_clear_message(make_client: MakeClient,
                                                 store: DirectoryStore) -> None:
    client = await make_client(quota_bytes=100_000)
    alice = await signup(client)
    await upload(client, os.urandom(60_000), headers=alice)
    resp = await client.post("/api/v1/videos", data=form(os.urandom(60_000)), headers=alice)
    problem = await assert_problem(resp, 413)
    assert "quota" in problem["detail"] and "40000 left" in problem["detail"]
    assert len(stored_files(store)) == 1
    bob = await signup(client, "bob@example.com")  # quotas are per user
    await upload(client, os.urandom(60_000), headers=bob)


async def test_uploads_need_a_user(client: TestClient, store: DirectoryStore) -> None:
    resp = await client.post("/api/v1/videos", data=form(b"media"))
    await assert_problem(resp, 401)
    resp = await client.post("/api/v1/videos", data=form(b"media"),
                             headers={"Authorization": "Bearer forged"})
    await assert_problem(resp, 401)
    assert stored_files(store) == []


class PurgeRecorder:
    """A tiny real edge purge API: records each call, checks the token."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.app = web.Application()
        self.app.router.add_post("/purge", self.purge)

    async def purge(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != "Bearer purge-secret":
            return web.json_response({"error": "token"}, status=401)
        body = await request.json()
        self.calls.append(body)
        return web.json_response({"purged": len(body["prefixes"])})


@pytest.fixture
async def edge() -> AsyncIterator[tuple[PurgeRecorder, str]]:
    recorder = PurgeRecorder()
    server = TestServer(recorder.app, host="127.0.0.1")
    await server.start_server()
    yield recorder, str(server.make_url("")).rstrip("/")
    await server.close()


async def test_delete_removes_objects_and_purges_edges(make_client: MakeClient,
                                                       store: DirectoryStore,
                                                       edge: tuple[PurgeRecorder, str],
                                                       tmp_path: Path) -> None:
    recorder, edge_url = edge
    dead_edge = "http://127.0.0.1:9"  # nothing listens: the delete must still succeed
    client = await make_client(edges=[edge_url, dead_edge], purge_token="purge-secret",
                               purge_timeout=1.0)
    alice = await signup(client)
    vid = (await upload(client, headers=alice))["video"]["id"]
    keep = (await upload(client, headers=alice))["video"]["id"]
    job = await claim(client)
    await store.write_bytes(f"vod/{vid}/master.m3u8", b"#EXTM3U\n")
    await store.write_bytes(f"vod/{vid}/v360/seg_00001.m4s", b"seg")
    await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 1}, headers=AUTH)

    resp = await client.delete(f"/api/v1/videos/{vid}", headers=alice)
    assert resp.status == 204
    await assert_problem(await client.get(f"/api/v1/videos/{vid}"), 404)
    assert not [f for f in stored_files(store) if vid in f]
    assert [f for f in stored_files(store) if keep in f]
    [call] = recorder.calls
    assert call["prefixes"][0] == f"/vod/{vid}/"  # its objects, and what the API shared of it
    assert {f"/api/v1/videos/{vid}/", f"/api/v1/videos/{vid}?", "/api/v1/trending",
            "/api/v1/search"} <= set(call["prefixes"])
    assert f"/api/v1/videos/{vid}" in call["paths"]
    metrics = await (await client.get("/metrics")).text()
    assert 'reel_control_edge_purges_total{result="ok"} 1.0' in metrics
    assert 'reel_control_edge_purges_total{result="error"} 1.0' in metrics
    # the worker learns its video is gone
    await assert_problem(await client.delete(f"/api/v1/videos/{vid}", headers=alice), 404)
