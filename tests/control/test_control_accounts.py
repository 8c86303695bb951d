"""Accounts: sign up, sign in for an expiring bearer token, sign out, the profile."""

from __future__ import annotations

import time

from aiohttp.test_utils import TestClient

from control.app import DB_KEY
from tests.control.conftest import PASSWORD, MakeClient, assert_problem, signup


async def test_sign_up_sign_in_profile_sign_out(client: TestClient) -> None:
    resp = await client.post("/api/v1/users", json={"email": "Ana@Example.com",
                                                    "password": PASSWORD, "name": "Ana"})
    assert resp.status == 201, await resp.text()
    user = (await resp.json())["user"]
    assert user["email"] == "ana@example.com" and user["name"] == "Ana"
    assert "password" not in str(user)
    assert resp.headers["Location"] == f"/api/v1/users/{user['id']}"

    resp = await client.post("/api/v1/sessions", json={"email": "ANA@example.com",
                                                       "password": PASSWORD})
    assert resp.status == 201
    session = await resp.json()
    assert session["token_type"] == "Bearer" and session["expires_at"].endswith("Z")
    auth = {"Authorization": f"Bearer {session['token']}"}

    me = await (await client.get("/api/v1/me", headers=auth)).json()
    assert me["id"] == user["id"] and me["email"] == "ana@example.com"
    resp = await client.patch("/api/v1/me", json={"name": "Ana B.", "bio": "I film birds.\nDaily."},
                              headers=auth)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["bio"] == "I film birds.\nDaily."
    public = await (await client.get(f"/api/v1/users/{user['id']}")).json()
    assert public["name"] == "Ana B." and "email" not in public and public["followers"] == 0

    assert (await client.delete("/api/v1/sessions/current", headers=auth)).status == 204
    await assert_problem(await client.get("/api/v1/me", headers=auth), 401)


async def test_wrong_credentials_and_duplicates(client: TestClient) -> None:
    await signup(client, "ana@example.com")
    resp = await client.post("/api/v1/users", json={"email": "ANA@example.com",
                                                    "password": PASSWORD})
    await assert_problem(resp, 409)
    for body in ({"email": "ana@example.com", "password": "wrong password"},
                 {"email": "nobody@example.com", "password": PASSWORD}):
        problem = await assert_problem(await client.post("/api/v1/sessions", json=body), 401)
        assert problem["detail"] == "wrong email or password"  # says nothing of which


async def test_bad_sign_up_input_is_400(client: TestClient) -> None:
    for body in ({}, {"email": "not-an-email", "password": PASSWORD},
                 {"email": "a@b.co", "password": "short"},
                 {"email": "a@b.co", "password": 12345678901},
                 {"email": ["a@b.co"], "password": PASSWORD},
                 {"email": "a@b.co", "password": PASSWORD, "name": "bad\x00name"},
                 {"email": "a@b.co", "password": PASSWORD, "name": "x" * 101},
                 {"email": "a@b.co", "password": "\ud800" * 10},
                 {"email": "a@b.co'; DROP TABLE users; --", "password": PASSWORD}):
        await assert_problem(await client.post("/api/v1/users", json=body), 400)
    await assert_problem(await client.post("/api/v1/users", data=b"{nope"), 400)
    await assert_problem(await client.post("/api/v1/users", data=b"x" * 70_000), 413)
    row = await client.app[DB_KEY].fetchone("SELECT count(*) FROM users")
    assert row[0] == 0


async def test_forged_and_missing_tokens(client: TestClient) -> None:
    for headers in ({}, {"Authorization": "Bearer forged"}, {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer "}):
        resp = await client.get("/api/v1/me", headers=headers)
        await assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")


async def test_tokens_expire(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(session_seconds=3600, clock=lambda: now[0])
    auth = await signup(client)
    now[0] += 3599
    assert (await client.get("/api/v1/me", headers=auth)).status == 200
    now[0] += 1
    await assert_problem(await client.get("/api/v1/me", headers=auth), 401)


async def test_password_change_needs_current_and_ends_other_sessions(client: TestClient) -> None:
    first = await signup(client, "ana@example.com")
    second = await signup(client, "ana@example.com")
    resp = await client.patch("/api/v1/me", json={"password": "a new password",
                                                  "current_password": "wrong"}, headers=first)
    await assert_problem(resp, 403)
    resp = await client.patch("/api/v1/me", json={"password": "a new password",
                                                  "current_password": PASSWORD}, headers=first)
    assert resp.status == 200
    assert (await client.get("/api/v1/me", headers=first)).status == 200
    await assert_problem(await client.get("/api/v1/me", headers=second), 401)
    resp = await client.post("/api/v1/sessions", json={"email": "ana@example.com",
                                                       "password": "a new password"})
    assert resp.status == 201


async def test_edit_profile_bad_input_changes_nothing(client: TestClient) -> None:
    auth = await signup(client, "ana@example.com", "Ana")
    for body in ({"name": ""}, {"name": 5}, {"bio": "x" * 2001}, {"name": "a\u0007b"}):
        await assert_problem(await client.patch("/api/v1/me", json=body, headers=auth), 400)
    me = await (await client.get("/api/v1/me", headers=auth)).json()
    assert me["name"] == "Ana" and me["bio"] == ""


async def test_admin_by_email(make_client: MakeClient) -> None:
    client = await make_client(admin_emails=["root@example.com"])
    auth = await signup(client, "root@example.com")
    assert (await (await client.get("/api/v1/me", headers=auth)).json())["is_admin"] is True
    other = await signup(client, "user@example.com")
    assert (await (await client.get("/api/v1/me", headers=other)).json())["is_admin"] is False
