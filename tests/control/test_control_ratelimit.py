"""Rate limits: 429 problem+json with Retry-After, per address, per user, stricter for sign-in."""

from __future__ import annotations

import pytest

from control.ratelimit import Limiter, Rate, RateLimits
from tests.control.conftest import AUTH, PASSWORD, MakeClient, assert_problem, signup


async def test_sign_in_is_throttled_per_address(make_client: MakeClient) -> None:
    client = await make_client(rate_limits=RateLimits(auth_per_ip=Rate(0.01, 3)))
    await signup(client, "ana@example.com")  # sign-up + sign-in: 2 of 3
    creds = {"email": "ana@example.com", "password": "wrong password"}
    assert (await client.post("/api/v1/sessions", json=creds)).status == 401
    body = await assert_problem(await client.post("/api/v1/sessions", json=creds), 429)
    assert "try again" in body["detail"]
    resp = await client.post("/api/v1/sessions", json={**creds, "password": PASSWORD})
    await assert_problem(resp, 429)  # even the right password waits
    assert 1 <= int(resp.headers["Retry-After"]) <= 100
    assert "Retry-After" in resp.headers["Access-Control-Expose-Headers"]
    # the rest of the API is not affected, nor are workers
    assert (await client.get("/api/v1/trending")).status == 200
    assert (await client.post("/api/v1/jobs/claim", json={}, headers=AUTH)).status == 204


async def test_per_address_and_per_user(make_client: MakeClient) -> None:
    client = await make_client(rate_limits=RateLimits(per_ip=Rate(0.01, 30),
                                                      per_user=Rate(0.01, 5)))
    alice = await signup(client, "alice@example.com")  # 2 requests from this address
    statuses = [(await client.get("/api/v1/me", headers=alice)).status for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2  # alice's own bucket ran dry first
    anonymous = [(await client.get("/api/v1/trending")).status for _ in range(25)]
    assert anonymous.count(429) == 25 - (30 - 2 - 7)  # then the address's
    resp = await client.get("/api/v1/trending")
    await assert_problem(resp, 429)
    assert int(resp.headers["Retry-After"]) >= 1


async def test_defaults_leave_room(client) -> None:  # type: ignore[no-untyped-def]
    for i in range(8):  # a script signing up a few accounts from one address is fine
        await signup(client, f"user{i}@example.com")
    for _ in range(100):
        assert (await client.get("/api/v1/trending")).status == 200


def test_bucket_refills_and_memory_is_bounded() -> None:
    now = [0.0]
    limiter = Limiter(Rate(2, 2), max_keys=10, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)][:2] == [0.0, 0.0]
    assert limiter.take("a") == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    for i in range(1000):
        limiter.take(f"ip{i}")
    assert len(limiter._buckets) <= 10
    assert Limiter(Rate(0, 1)).take("x") == 0.0
    assert Rate.parse("0.2:20") == Rate(0.2, 20) and not Rate.parse("0").enabled
    with pytest.raises(ValueError):
        Rate.parse("fast")


async def test_missing_or_bad_credentials_are_401_even_when_throttled(make_client: MakeClient) -> None:
    client = await make_client(rate_limits=RateLimits(per_ip=Rate(0.01, 2)))
    for _ in range(2):
        assert (await client.get("/api/v1/trending")).status == 200
    await assert_problem(await client.get("/api/v1/trending"), 429)  # this address waits now
    # authentication comes first: a request that cannot be served is told why, not to wait
    for method, path in (("POST", "/api/v1/videos"), ("GET", "/api/v1/me"),
                         ("POST", "/api/v1/uploads"), ("DELETE", "/api/v1/sessions/current")):
        resp = await client.request(method, path)
        await assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get("/api/v1/videos/abcdefgh", headers={"Authorization": "Bearer forged"})
    await assert_problem(resp, 401)
    await assert_problem(await client.post("/api/v1/jobs/claim"), 401)  # workers too
