"""Admin-made signed-in viewers: how load tests get accounts that signed in before the test,
so the test measures browsing, not a burst of password hashing."""

from __future__ import annotations

from tests.control.conftest import MakeClient, assert_problem, signup, upload

ADMIN = "admin@example.com"


async def test_admin_makes_signed_in_viewers_who_can_comment_and_rate(make_client: MakeClient) -> None:
    client = await make_client(admin_emails=[ADMIN])
    admin = await signup(client, ADMIN)
    resp = await client.post("/api/v1/admin/viewers", headers=admin, json={"count": 3})
    assert resp.status == 201, await resp.text()
    items = (await resp.json())["items"]
    assert len({s["token"] for s in items}) == 3 and len({s["user"]["id"] for s in items}) == 3
    for session in items:
        assert session["token_type"] == "Bearer" and not session["user"]["is_admin"]
        me = await client.get("/api/v1/me", headers={"Authorization": f"Bearer {session['token']}"})
        assert me.status == 200 and (await me.json())["id"] == session["user"]["id"]

    # a viewer's token works like any session: they write under their own name
    video = (await upload(client, headers=admin))["video"]["id"]
    bearer = {"Authorization": f"Bearer {items[0]['token']}"}
    said = await client.post(f"/api/v1/videos/{video}/comments", headers=bearer, json={"text": "hi"})
    assert said.status == 201, await said.text()
    assert (await said.json())["user"]["id"] == items[0]["user"]["id"]
    # and no password signs them in (they have none)
    for password in ("!", "reel-loadtest-password"):
        await assert_problem(await client.post("/api/v1/sessions", json={
            "email": items[0]["user"]["email"], "password": password}), 401)


async def test_viewers_are_for_admins_in_bounded_batches(make_client: MakeClient) -> None:
    client = await make_client(admin_emails=[ADMIN])
    admin = await signup(client, ADMIN)
    alice = await signup(client, "alice@example.com")
    await assert_problem(await client.post("/api/v1/admin/viewers", json={"count": 1}), 401)
    await assert_problem(await client.post("/api/v1/admin/viewers", headers=alice,
                                           json={"count": 1}), 403)
    for bad in ({}, {"count": 0}, {"count": 501}, {"count": "2"}, {"count": 1.5}, {"count": True}):
        await assert_problem(await client.post("/api/v1/admin/viewers", headers=admin, json=bad), 400)
