"""What control lets edges share (anonymous public reads: Cache-Control, ETag, 304), and whose
address it takes from X-Forwarded-For (an edge's with the shared secret, nobody else's)."""

from __future__ import annotations

from control.ratelimit import Rate, RateLimits
from tests.control.conftest import MakeClient, assert_problem, signup, upload

SECRET = "edge-secret"


async def test_anonymous_public_reads_are_shareable_with_an_etag(make_client: MakeClient) -> None:
    client = await make_client(api_max_age=5)
    alice = await signup(client, "alice@example.com")
    video_id = (await upload(client, headers=alice))["video"]["id"]
    user_id = (await (await client.get("/api/v1/me", headers=alice)).json())["id"]
    for path in (f"/api/v1/videos/{video_id}", f"/api/v1/videos/{video_id}/comments",
                 f"/api/v1/videos/{video_id}/reviews", f"/api/v1/videos/{video_id}/rating",
                 f"/api/v1/users/{user_id}", f"/api/v1/users/{user_id}/videos", "/api/v1/trending",
                 "/api/v1/search?q=clip", "/api/v1/videos"):
        resp = await client.get(path)
        assert resp.status == 200, path
        assert resp.headers["Cache-Control"].startswith("public, max-age=5, stale-while-revalidate="), path
        assert resp.headers["Vary"] == "Authorization"
        etag = resp.headers["ETag"]
        again = await client.get(path, headers={"If-None-Match": etag})
        assert again.status == 304 and again.headers["ETag"] == etag, path
        assert await again.read() == b""
        # the same read signed in is the reader's own: never shared
        mine = await client.get(path, headers=alice)
        assert mine.headers["Cache-Control"] == "private, no-store", path
        assert "ETag" not in mine.headers
        cookie = await client.get(path, headers={"Cookie": "session=x"})
        assert cookie.headers["Cache-Control"] == "private, no-store", path


async def test_changes_change_the_etag_and_the_rest_is_private(make_client: MakeClient) -> None:
    client = await make_client()
    alice = await signup(client, "alice@example.com")
    video_id = (await upload(client, headers=alice, title="One"))["video"]["id"]
    path = f"/api/v1/videos/{video_id}"
    etag = (await client.get(path)).headers["ETag"]
    assert (await client.patch(path, json={"title": "Two"}, headers=alice)).status == 200
    resp = await client.get(path, headers={"If-None-Match": etag})
    assert resp.status == 200 and (await resp.json())["title"] == "Two"
    assert resp.headers["ETag"] != etag
    # writes, personal reads and problems are not for sharing
    resp = await client.post(f"{path}/comments", json={"text": "hi"}, headers=alice)
    assert resp.status == 201 and resp.headers["Cache-Control"] == "private, no-store"
    resp = await client.get("/api/v1/me", headers=alice)
    assert resp.headers["Cache-Control"] == "private, no-store"
    resp = await client.get("/api/v1/videos/nosuchvideo")
    await assert_problem(resp, 404)
    assert resp.headers["Cache-Control"] == "private, no-store"


async def test_forwarded_for_is_believed_only_with_the_edge_secret(make_client: MakeClient) -> None:
    client = await make_client(edge_secret=SECRET, rate_limits=RateLimits(per_ip=Rate(0.01, 3)))

    async def trending(**headers: str) -> int:
        return (await client.get("/api/v1/trending", headers=headers)).status

    # through an edge: each client has its own bucket
    edge_a = {"X-Reel-Edge": SECRET, "X-Forwarded-For": "198.51.100.7, 203.0.113.1"}
    edge_b = {"X-Reel-Edge": SECRET, "X-Forwarded-For": "203.0.113.2"}
    assert [await trending(**edge_a) for _ in range(4)] == [200, 200, 200, 429]
    assert [await trending(**edge_b) for _ in range(3)] == [200, 200, 200]
    # a client writing its own X-Forwarded-For (no secret, or a wrong one) is its own address
    forged = [await trending(**{"X-Forwarded-For": f"192.0.2.{i}"}) for i in range(3)]
    wrong = await trending(**{"X-Reel-Edge": "guess", "X-Forwarded-For": "192.0.2.99"})
    assert forged + [wrong] == [200, 200, 200, 429]


async def test_without_a_secret_no_forwarded_address_is_believed(make_client: MakeClient) -> None:
    client = await make_client(rate_limits=RateLimits(per_ip=Rate(0.01, 2)))
    statuses = [(await client.get("/api/v1/trending",
                                  headers={"X-Reel-Edge": "", "X-Forwarded-For": f"192.0.2.{i}"})).status
                for i in range(3)]
    assert statuses == [200, 200, 429]


async def test_the_document_says_so(make_client: MakeClient) -> None:
    client = await make_client()
    doc = await (await client.get("/api/v1/openapi.json")).json()
    shared = doc["paths"]["/api/v1/videos/{video_id}"]["get"]["responses"]
    assert "304" in shared and {"Cache-Control", "ETag"} <= set(shared["200"]["headers"])
    assert "304" not in doc["paths"]["/api/v1/me"]["get"]["responses"]
