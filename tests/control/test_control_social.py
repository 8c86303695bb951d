"""Viewers: reviews, like/dislike, comments and replies, follows and the feed, views, trending."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from tests.control.conftest import AUTH, MakeClient, assert_problem, claim, signup, upload


async def _ready(client: TestClient, headers: dict, title: str = "clip", **fields: str) -> str:
    vid = (await upload(client, title=title, headers=headers, **fields))["video"]["id"]
    job = await claim(client)
    assert job["video_id"] == vid
    resp = await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 3},
                             headers=AUTH)
    assert resp.status == 200
    return vid


async def _merged(client: TestClient, url: str, done: Callable[[dict], Any],
                  headers: dict | None = None) -> dict:
    """GET `url` until `done(body)`: views are merged within a flush interval (write-behind)."""
    async with asyncio.timeout(10):
        while not done(body := await (await client.get(url, headers=headers)).json()):  # noqa: ASYNC110 (polls HTTP)
            await asyncio.sleep(0.05)
    return body


async def _all(client: TestClient, url: str, headers: dict | None = None, limit: int = 2) -> list:
    items, cursor = [], None
    while True:
        sep = "&" if "?" in url else "?"
        full = f"{url}{sep}limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        resp = await client.get(full, headers=headers or {})
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        items += body["items"]
        if not (cursor := body["next_cursor"]):
            return items


async def test_reviews_one_per_user_editable(client: TestClient, alice: dict, bob: dict) -> None:
    vid = (await upload(client, headers=alice))["video"]["id"]
    url = f"/api/v1/videos/{vid}/review"
    assert (await client.put(url, json={"rating": 4, "text": "Nice"}, headers=bob)).status == 200
    resp = await client.put(url, json={"rating": 2, "text": "On reflection, meh"}, headers=bob)
    assert (await resp.json())["rating"] == 2
    assert (await client.put(url, json={"rating": 5}, headers=alice)).status == 200
    body = await (await client.get(f"/api/v1/videos/{vid}/reviews")).json()
    assert body["count"] == 2 and body["average"] == 3.5
    assert [r["rating"] for r in body["items"]] == [5, 2]
    assert body["items"][1]["text"] == "On reflection, meh"
    for bad in ({"rating": 0}, {"rating": 6}, {"rating": "5"}, {"rating": 4.5}, {"rating": True},
                {}, {"rating": 3, "text": "x" * 5001}):
        await assert_problem(await client.put(url, json=bad, headers=bob), 400)
    await assert_problem(await client.put(url, json={"rating": 3}), 401)
    assert (await client.delete(url, headers=bob)).status == 204
    await assert_problem(await client.delete(url, headers=bob), 404)
    body = await (await client.get(f"/api/v1/videos/{vid}/reviews")).json()
    assert body["count"] == 1


async def test_like_dislike_none_with_my_rating(client: TestClient, alice: dict,
                                                bob: dict) -> None:
    vid = (await upload(client, headers=alice))["video"]["id"]
    url = f"/api/v1/videos/{vid}/rating"
    carol = await signup(client, "carol@example.com")
    await client.put(url, json={"rating": "like"}, headers=bob)
    await client.put(url, json={"rating": "like"}, headers=bob)  # idempotent
    resp = await client.put(url, json={"rating": "dislike"}, headers=carol)
    assert await resp.json() == {"likes": 1, "dislikes": 1, "my_rating": "dislike"}
    assert await (await client.get(url, headers=bob)).json() == {
        "likes": 1, "dislikes": 1, "my_rating": "like"}
    assert (await (await client.get(url)).json())["my_rating"] is None
    await client.put(url, json={"rating": "like"}, headers=carol)
    resp = await client.put(url, json={"rating": "none"}, headers=bob)
    assert await resp.json() == {"likes": 1, "dislikes": 0, "my_rating": "none"}
    video = await (await client.get(f"/api/v1/videos/{vid}")).json()
    assert (video["likes"], video["dislikes"]) == (1, 0)
    for bad in ({"rating": "love"}, {"rating": 1}, {}):
        await assert_problem(await client.put(url, json=bad, headers=bob), 400)


async def test_comments_with_one_level_of_replies(client: TestClient, alice: dict,
                                                  bob: dict) -> None:
    vid = (await upload(client, headers=alice))["video"]["id"]
    url = f"/api/v1/videos/{vid}/comments"
    top = []
    for i in range(5):
        resp = await client.post(url, json={"text": f"comment {i}"}, headers=bob)
        assert resp.status == 201
        top.append((await resp.json())["id"])
    first = top[0]
    for i in range(3):
        resp = await client.post(url, json={"text": f"reply {i}", "parent_id": first},
                                 headers=alice)
        assert resp.status == 201
    reply = (await resp.json())["id"]
    await assert_problem(await client.post(url, json={"text": "deep", "parent_id": reply},
                                           headers=bob), 400)
    await assert_problem(await client.post(url, json={"text": "x", "parent_id": "nope"},
                                           headers=bob), 404)  # no such comment to reply to
    for bad in ({"text": ""}, {"text": "  "}, {}, {"text": 5}, {"text": "x" * 2001}):
        await assert_problem(await client.post(url, json=bad, headers=bob), 400)

    comments = await _all(client, url)
    assert [c["id"] for c in comments] == top[::-1]  # newest first, replies not mixed in
    assert comments[-1]["reply_count"] == 3 and comments[-1]["user"]["name"] == "Bob"
    replies = await _all(client, f"/api/v1/comments/{first}/replies")
    assert [r["text"] for r in replies] == ["reply 2", "reply 1", "reply 0"]

    # the author or the video's owner may delete; others may not; replies go with their parent
    await assert_problem(await client.delete(f"/api/v1/comments/{top[1]}",
                                             headers=await signup(client, "eve@example.com")), 403)
    assert (await client.delete(f"/api/v1/comments/{top[1]}", headers=bob)).status == 204
    assert (await client.delete(f"/api/v1/comments/{first}", headers=alice)).status == 204
    assert len(await _all(client, url)) == 3
    await assert_problem(await client.get(f"/api/v1/comments/{first}/replies"), 404)


async def test_follow_and_feed(client: TestClient, alice: dict, bob: dict) -> None:
    alice_id = (await (await client.get("/api/v1/me", headers=alice)).json())["id"]
    carol = await signup(client, "carol@example.com")
    carol_id = (await (await client.get("/api/v1/me", headers=carol)).json())["id"]
    ready = [await _ready(client, alice, f"a{i}") for i in range(3)]
    await _ready(client, carol, "carol's")
    await _ready(client, alice, "secret", privacy="private")
    await upload(client, headers=alice)  # queued: not in the feed
    assert (await client.put(f"/api/v1/users/{alice_id}/follow", headers=bob)).status == 204
    assert (await client.put(f"/api/v1/users/{alice_id}/follow", headers=bob)).status == 204
    feed = await _all(client, "/api/v1/me/feed", bob)
    assert [v["id"] for v in feed] == ready[::-1]
    profile = await (await client.get(f"/api/v1/users/{alice_id}")).json()
    assert profile["followers"] == 1
    await client.put(f"/api/v1/users/{carol_id}/follow", headers=bob)
    assert len(await _all(client, "/api/v1/me/feed", bob)) == 4
    assert (await client.delete(f"/api/v1/users/{carol_id}/follow", headers=bob)).status == 204
    assert len(await _all(client, "/api/v1/me/feed", bob)) == 3
    await assert_problem(await client.put(f"/api/v1/users/{alice_id}/follow", headers=alice), 409)
    await assert_problem(await client.put("/api/v1/users/nobody/follow", headers=bob), 404)
    await assert_problem(await client.get("/api/v1/me/feed"), 401)


async def test_views_once_per_window_and_trending(make_client: MakeClient) -> None:
    now = [1_000_000.0]
    client = await make_client(view_window_seconds=3600, clock=lambda: now[0])
    alice = await signup(client, "alice@example.com")
    bob = await signup(client, "bob@example.com")
    hot, warm, cold = [await _ready(client, alice, t) for t in ("hot", "warm", "cold")]
    for vid, viewers in ((hot, [alice, bob, {}]), (warm, [bob])):
        for who in viewers:
            resp = await client.post(f"/api/v1/videos/{vid}/views", headers=who)
            assert (await resp.json())["counted"] is True
    again = await (await client.post(f"/api/v1/videos/{hot}/views", headers=bob)).json()
    assert again == {"views": 3, "counted": False}
    trending = await _merged(client, "/api/v1/trending",
                             lambda body: body["items"] and body["items"][0]["views"] == 3)
    assert [v["id"] for v in trending["items"]] == [hot, warm]
    assert trending["items"][0]["recent_views"] == 3 and trending["items"][0]["views"] == 3
    now[0] += 3600  # a new window: bob counts again
    assert (await (await client.post(f"/api/v1/videos/{hot}/views",
                                     headers=bob)).json())["counted"] is True
    assert cold not in [v["id"] for v in (await (await client.get("/api/v1/trending")).json())[
        "items"]]


async def test_private_video_social_is_absent(client: TestClient, alice: dict,
                                              bob: dict) -> None:
    vid = (await upload(client, os.urandom(10), headers=alice, privacy="private"))["video"]["id"]
    for method, path, body in (("put", "review", {"rating": 3}), ("put", "rating",
                               {"rating": "like"}), ("post", "comments", {"text": "hi"}),
                               ("post", "views", {}), ("get", "comments", None)):
        resp = await client.request(method, f"/api/v1/videos/{vid}/{path}", json=body,
                                    headers=bob)
        await assert_problem(resp, 404)
    resp = await client.post(f"/api/v1/videos/{vid}/comments", json={"text": "mine"},
                             headers=alice)
    assert resp.status == 201
