"""The public "for you" list: trending first, then the newest, with what a player needs."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from tests.control.conftest import signup
from tests.control.test_control_social import _merged, _ready


async def test_for_you_trending_then_newest(client: TestClient) -> None:
    alice = await signup(client, "alice@example.com")
    old, hot, new = [await _ready(client, alice, t) for t in ("old", "hot", "new")]
    assert (await client.post(f"/api/v1/videos/{hot}/views")).status == 200
    await _merged(client, "/api/v1/trending", lambda body: len(body["items"]) == 1)
    body = await (await client.get("/api/v1/feed/for-you?limit=3")).json()
    assert [v["id"] for v in body["items"]] == [hot, new, old]
    assert all(v["playback_url"] and v["poster_url"] for v in body["items"])
    body = await (await client.get("/api/v1/feed/for-you?limit=2")).json()
    assert [v["id"] for v in body["items"]] == [hot, new]
