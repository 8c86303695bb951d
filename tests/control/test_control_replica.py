"""`reel control --db PRIMARY --db-replica REPLICA`: anonymous reads from a real streaming replica,
writes and signed-in reads from the primary, and the primary's answers when the replica is down."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from control.app import make_app
from origin.store import DirectoryStore
from tests.control.conftest import AUTH, FAST_HASHER, GEO, TOKEN, claim, signup, upload
from tests.control.pgserver import PostgresServer, StandbyServer


@pytest.fixture
async def standby(postgres: PostgresServer) -> AsyncIterator[StandbyServer]:
    server = StandbyServer(postgres)
    try:
        await server.start()
        yield server
    finally:
        server.stop()


async def test_anonymous_reads_hit_the_replica(postgres: PostgresServer, standby: StandbyServer,
                                               tmp_path: Path) -> None:
    primary = await postgres.create_database()
    await standby.caught_up()
    app = make_app(tmp_path / "data", DirectoryStore(tmp_path / "objects"), GEO, TOKEN, 2**20,
                   password_hasher=FAST_HASHER, database=primary,
                   database_replica=standby.url_of(primary))
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        alice = await signup(client, "alice@example.com", "Alice")
        vid = (await upload(client, title="before", headers=alice))["video"]["id"]
        job = await claim(client)
        assert (await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 3},
                                  headers=AUTH)).status == 200
        await standby.caught_up()
        url = f"/api/v1/videos/{vid}"
        assert (await (await client.get(url)).json())["title"] == "before"

        await standby.pause()  # the replica now lags: what it answers shows where reads went
        assert (await client.patch(url, json={"title": "after"}, headers=alice)).status == 200
        assert (await client.post(url + "/comments", json={"text": "first!"},
                                  headers=alice)).status == 201
        # Anonymous: the replica's (stale) answers.
        assert (await (await client.get(url)).json())["title"] == "before"
        assert (await (await client.get(url + "/comments")).json())["items"] == []
        assert (await (await client.get("/api/v1/search?q=before")).json())["items"][0]["id"] == vid
        # Signed in: the primary's, so the writer reads its own writes at once.
        assert (await (await client.get(url, headers=alice)).json())["title"] == "after"
        assert len((await (await client.get(url + "/comments", headers=alice)).json())[
            "items"]) == 1

        await standby.resume()
        await standby.caught_up()
        assert (await (await client.get(url)).json())["title"] == "after"

        standby.halt()  # the replica is down: anonymous reads fall back to the primary
        await client.patch(url, json={"title": "again"}, headers=alice)
        assert (await (await client.get(url)).json())["title"] == "again"
        assert (await (await client.get(url + "/comments")).json())["items"][0]["text"] == "first!"
    finally:
        await client.close()
        await postgres.drop_database(primary)
