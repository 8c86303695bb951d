"""Live streams in the API: creation and stream keys, the ingest-facing endpoints, the states a
live video goes through (on SQLite and PostgreSQL), search and trending while live."""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from control.app import DB_KEY
from control.db import Database, IntegrityError
from control.live import LiveSettings
from control.pg import MIGRATIONS as PG_MIGRATIONS
from control.pg import PostgresDatabase
from control.ratelimit import Rate, RateLimits
from control.search import match_expression
from control.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from control.sqlite import SQLiteDatabase
from origin.store import DirectoryStore
from tests.control.conftest import (
    AUTH,
    GEO,
    MakeClient,
    assert_problem,
    signup,
    stored_files,
    upload,
    video,
)
from tests.control.pgserver import PostgresServer

RTMP = "rtmp://ingest.test:1935/live"
SRT = "srt://ingest.test:9000"
GRACE = 30.0
SETTINGS = LiveSettings(rtmp_url=RTMP, srt_url=SRT, grace_seconds=GRACE)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def live(make_client: MakeClient, clock: Clock) -> TestClient:
    return await make_client(live=SETTINGS, clock=clock, admin_emails=["admin@example.com"])


async def create(client: TestClient, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/live", json={"title": "Sunset over the bay", **body},
                             headers=headers)
    assert resp.status == 201, await resp.text()
    assert resp.headers["Location"].startswith("/api/v1/videos/")
    return await resp.json()


async def ingest(client: TestClient, path: str, body: Any = None,
                 status: int = 200) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/ingest/{path}", json=body, headers=AUTH)
    if status != 200:
        return await assert_problem(resp, status)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def authorize(client: TestClient, key: str, status: int = 200) -> dict[str, Any]:
    return await ingest(client, "authorize", {"stream_key": key}, status)


async def test_create_shows_the_key_once_and_stores_its_hash(
        live: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    alice = await signup(live, "alice@example.com")
    made = await create(live, alice, description="golden hour", dvr_seconds=600,
                        tags=["sea"], privacy="public")
    key, vid = made["stream_key"], made["video"]["id"]
    assert key.startswith("live_") and len(key) >= 32  # >= 128 random bits
    assert made["ingest"] == {"rtmp": f"{RTMP}/{key}", "srt": f"{SRT}?streamid=publish:{key}"}
    assert made["dvr_seconds"] == 600
    v = made["video"]
    assert (v["kind"], v["state"], v["live"], v["viewers"]) == ("live", "waiting", False, None)
    assert v["playback_url"] == f"{GEO}/steer/live/{vid}/master.m3u8"
    assert v["description"] == "golden hour" and v["tags"] == ["sea"]
    assert key not in str(await video(live, vid))

    db = live.app[DB_KEY]
    row = await db.fetchone("SELECT * FROM live_streams WHERE video_id = ?", (vid,))
    assert row["key_hash"] == hashlib.sha256(key.encode()).hexdigest()
    assert row["dvr_seconds"] == 600
    assert all(key not in str(value) for value in tuple(row))
    default = await create(live, alice)
    assert default["dvr_seconds"] == 7200
    assert default["stream_key"] != key
    await authorize(live, key)
    rotated = await (await live.post(f"/api/v1/live/{vid}/key", headers=alice)).json()
    await authorize(live, rotated["stream_key"])
    assert "live stream created" in caplog.text and "publisher admitted" in caplog.text
    for secret in (key, rotated["stream_key"], default["stream_key"]):
        assert not any(secret in str(vars(r)) for r in caplog.records)  # never logged


async def test_without_ingest_flags_the_urls_are_null(client: TestClient) -> None:
    made = await create(client, await signup(client))
    assert made["ingest"] == {"rtmp": None, "srt": None}


@pytest.mark.parametrize("body", [
    {"dvr_seconds": 59}, {"dvr_seconds": 7201}, {"dvr_seconds": "600"}, {"title": ""},
    {"title": "x" * 201}, {"privacy": "secret"}, {"stream_key": "mine"}, [],
])
async def test_bad_input_is_a_problem(live: TestClient, body: Any) -> None:
    alice = await signup(live, "alice@example.com")
    await assert_problem(await live.post("/api/v1/live", json=body, headers=alice), 400)


async def test_create_needs_a_user_and_ingest_the_worker_token(live: TestClient) -> None:
    await assert_problem(await live.post("/api/v1/live", json={}), 401)
    alice = await signup(live, "alice@example.com")
    key = (await create(live, alice))["stream_key"]
    for headers in ({}, alice):
        resp = await live.post("/api/v1/ingest/authorize", json={"stream_key": key},
                               headers=headers)
        await assert_problem(resp, 401)
    await authorize(live, "live_not-a-key", 403)
    await authorize(live, "", 400)


async def test_lifecycle_waiting_live_grace_resume_end_vod(live: TestClient, clock: Clock) -> None:
    made = await create(live, await signup(live, "alice@example.com"))
    key, vid = made["stream_key"], made["video"]["id"]
    first = await _goes_live(live, key, vid)
    again = await _drops_and_resumes(live, clock, key, vid, first)
    await _ends_and_becomes_a_vod(live, clock, key, vid, again)


async def _goes_live(live: TestClient, key: str, vid: str) -> str:
    admitted = await authorize(live, key)
    assert admitted == {"video_id": vid, "publisher": f"{vid}.1", "dvr_seconds": 7200,
                        "resume": False, "heartbeat_seconds": 5.0, "grace_seconds": GRACE}
    await authorize(live, key, 409)  # a second publisher, before the first even sent media
    first = admitted["publisher"]
    state = await ingest(live, f"streams/{first}/connected")
    assert state == {"video_id": vid, "state": "live", "end": False, "disconnect": False,
                     "grace_seconds": GRACE}
    assert (await ingest(live, f"streams/{first}/connected"))["state"] == "live"  # a retry
    await authorize(live, key, 409)  # a second publisher while one is live
    v = await video(live, vid)
    assert (v["state"], v["live"], v["viewers"]) == ("live", True, 0)
    assert v["playback_url"] == f"{GEO}/steer/live/{vid}/master.m3u8"
    beat = await ingest(live, f"streams/{first}/heartbeat", {"viewers": 7})
    assert (beat["end"], beat["disconnect"]) == (False, False)
    assert (await video(live, vid))["viewers"] == 7
    return first


async def _drops_and_resumes(live: TestClient, clock: Clock, key: str, vid: str,
                             first: str) -> str:
    """The publisher drops and comes back within the grace period: the same video goes on."""
    gone = await ingest(live, f"streams/{first}/gone")
    assert (gone["state"], gone["end"]) == ("live", False)
    assert (await ingest(live, f"streams/{first}/gone"))["state"] == "live"  # a retry
    clock.now += GRACE - 1
    again = await authorize(live, key)
    assert again["resume"] is True and again["publisher"] == f"{vid}.2"
    await ingest(live, f"streams/{first}/connected", status=409)  # the old publisher is replaced
    await ingest(live, f"streams/{again['publisher']}/connected")
    for _ in range(int(GRACE)):  # connected again, heartbeats coming: no grace clock runs
        clock.now += 5
        assert (await ingest(live, f"streams/{again['publisher']}/heartbeat"))["end"] is False
    return again["publisher"]


async def _ends_and_becomes_a_vod(live: TestClient, clock: Clock, key: str, vid: str,
                                  publisher: str) -> None:
    """Gone for longer than the grace period: the stream ends and becomes a VOD."""
    await ingest(live, f"streams/{publisher}/gone")
    clock.now += GRACE + 1
    ended = await ingest(live, f"streams/{publisher}/heartbeat", {"viewers": 3})
    assert (ended["state"], ended["end"]) == ("processing", True)
    v = await video(live, vid)
    assert (v["state"], v["live"], v["viewers"], v["playback_url"]) == (
        "processing", False, None, None)
    await authorize(live, key, 409)  # the stream is over
    for _ in range(2):  # reported twice: the same answer
        done = await ingest(live, f"streams/{vid}/vod",
                            {"duration": 93.5, "renditions": ["v720", "v480", "a128"]})
        assert (done["state"], done["end"]) == ("ready", True)
    v = await video(live, vid)
    assert (v["state"], v["duration"], v["kind"]) == ("ready", 93.5, "live")
    assert v["playback_url"] == f"{GEO}/steer/vod/{vid}/master.m3u8"
    assert v["poster_url"] == f"{GEO}/vod/{vid}/thumbs/poster.jpg"
    await ingest(live, f"streams/{vid}/fail", {"reason": "late"}, 409)
    text = await (await live.get("/metrics")).text()
    for event, count in (("admitted", 1), ("resumed", 1), ("refused_busy", 2),
                         ("refused_ended", 1), ("connected", 3), ("gone", 3), ("vod", 2)):
        assert f'reel_control_live_events_total{{event="{event}"}} {count}.0' in text, event


async def test_the_owner_sees_the_stream_and_its_grace_period(live: TestClient) -> None:
    alice = await signup(live, "alice@example.com")
    made = await create(live, alice)
    key, vid = made["stream_key"], made["video"]["id"]
    publisher = (await authorize(live, key))["publisher"]
    await ingest(live, f"streams/{publisher}/connected")
    await ingest(live, f"streams/{publisher}/gone")
    resp = await live.get(f"/api/v1/live/{vid}", headers=alice)
    assert resp.status == 200, await resp.text()
    status = await resp.json()
    assert (status["publisher"], status["dvr_seconds"], status["ended_at"]) == ("gone", 7200, None)
    assert status["grace_ends_at"] == "2027-01-15T08:00:30.000Z"  # the clock's start + 30 s
    assert status["video"]["state"] == "live"
    assert status["ingest"]["rtmp"] == f"{RTMP}/STREAM_KEY" and key not in str(status)
    await assert_problem(await live.get(f"/api/v1/live/{vid}"), 401)
    await assert_problem(await live.get(f"/api/v1/live/{vid}",
                                        headers=await signup(live, "bob@example.com")), 403)
    uploaded = (await upload(live, headers=alice))["video"]["id"]
    await assert_problem(await live.get(f"/api/v1/live/{uploaded}", headers=alice), 409)


async def test_rotation_refuses_the_old_key_and_cuts_its_publisher(live: TestClient) -> None:
    alice = await signup(live, "alice@example.com")
    bob = await signup(live, "bob@example.com")
    admin = await signup(live, "admin@example.com")
    made = await create(live, alice)
    old, vid = made["stream_key"], made["video"]["id"]
    publisher = (await authorize(live, old))["publisher"]
    await ingest(live, f"streams/{publisher}/connected")

    await assert_problem(await live.post(f"/api/v1/live/{vid}/key", headers=bob), 403)
    await assert_problem(await live.post(f"/api/v1/live/{vid}/key", headers=admin), 403)
    await assert_problem(await live.post(f"/api/v1/live/{vid}/key"), 401)
    resp = await live.post(f"/api/v1/live/{vid}/key", headers=alice)
    assert resp.status == 200, await resp.text()
    new = (await resp.json())["stream_key"]
    assert new != old and (await resp.json())["ingest"]["rtmp"] == f"{RTMP}/{new}"
    row = await live.app[DB_KEY].fetchone("SELECT key_hash FROM live_streams WHERE video_id = ?",
                                          (vid,))
    assert row[0] == hashlib.sha256(new.encode()).hexdigest()

    await authorize(live, old, 403)
    beat = await ingest(live, f"streams/{publisher}/heartbeat", {"viewers": 2})
    assert (beat["disconnect"], beat["end"], beat["state"]) == (True, False, "live")
    # the cut-off publisher's recording does not end the stream: it waits for the new key
    await ingest(live, f"streams/{publisher}/vod", {"duration": 3.0, "renditions": ["720p"]},
                 status=409)
    resumed = await authorize(live, new)
    assert resumed["resume"] is True


async def test_end_by_owner_or_admin_only(live: TestClient) -> None:
    alice = await signup(live, "alice@example.com")
    bob = await signup(live, "bob@example.com")
    admin = await signup(live, "admin@example.com")
    made = await create(live, alice)
    vid = made["video"]["id"]
    publisher = (await authorize(live, made["stream_key"]))["publisher"]
    await ingest(live, f"streams/{publisher}/connected")
    await assert_problem(await live.post(f"/api/v1/live/{vid}/end", headers=bob), 403)
    await assert_problem(await live.post("/api/v1/live/nosuchvideo/end", headers=alice), 404)
    for _ in range(2):
        resp = await live.post(f"/api/v1/live/{vid}/end", headers=alice)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["state"] == "processing"
    beat = await ingest(live, f"streams/{publisher}/heartbeat", {"viewers": 1})
    assert beat["end"] is True
    failed = await ingest(live, f"streams/{publisher}/fail",
                          {"reason": "no_segments", "detail": "nothing\x00 to keep"})
    assert failed["state"] == "failed"
    v = await video(live, vid)
    assert (v["state"], v["reason"]) == ("failed", "no_segments: nothing to keep")

    # Ended before anything was published: it fails, nothing to make a VOD of.
    private = await create(live, alice, privacy="private")
    pid = private["video"]["id"]
    await assert_problem(await live.post(f"/api/v1/live/{pid}/end", headers=bob), 404)
    resp = await live.post(f"/api/v1/live/{pid}/end", headers=admin)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["reason"].startswith("no_media")
    await authorize(live, private["stream_key"], 409)
    await assert_problem(await live.post(f"/api/v1/live/{pid}/key", headers=alice), 409)

    uploaded = (await upload(live, headers=alice))["video"]["id"]
    await assert_problem(await live.post(f"/api/v1/live/{uploaded}/end", headers=alice), 409)
    await ingest(live, f"streams/{uploaded}/connected", status=404)


async def test_a_silent_ingest_loses_the_publisher_then_the_stream(
        live: TestClient, clock: Clock) -> None:
    alice = await signup(live, "alice@example.com")
    made = await create(live, alice)
    vid = made["video"]["id"]
    publisher = (await authorize(live, made["stream_key"]))["publisher"]
    await ingest(live, f"streams/{publisher}/connected")
    clock.now += 16  # three heartbeats missed: the publisher is gone, the grace period runs
    assert (await authorize(live, made["stream_key"]))["resume"] is True
    clock.now += 16 + GRACE  # that one never connected either
    await authorize(live, made["stream_key"], 409)
    assert (await video(live, vid))["state"] == "processing"
    clock.now += 590
    state = await ingest(live, f"streams/{vid}/heartbeat")
    assert state["state"] == "processing"  # ingest speaks: it is still at work
    clock.now += 601  # and then no VOD is ever reported
    await ingest(live, f"streams/{vid}/vod", {"duration": 1.0}, 409)
    v = await video(live, vid)
    assert (v["state"], v["reason"].split(":")[0]) == ("failed", "ingest_lost")


async def test_search_and_trending_flag_live_streams(live: TestClient) -> None:
    alice = await signup(live, "alice@example.com")
    made = await create(live, alice, title="Sunset sailing live")
    vid = made["video"]["id"]
    resp = await live.get("/api/v1/search", params={"q": "sunset"})
    assert (await resp.json())["items"] == []  # waiting: not yet found
    publisher = (await authorize(live, made["stream_key"]))["publisher"]
    await ingest(live, f"streams/{publisher}/connected")
    await ingest(live, f"streams/{publisher}/heartbeat", {"viewers": 42})

    found = (await (await live.get("/api/v1/search", params={"q": "sunset"})).json())["items"]
    assert [(v["id"], v["live"], v["viewers"]) for v in found] == [(vid, True, 42)]
    trending = (await (await live.get("/api/v1/trending")).json())["items"]
    assert [(v["id"], v["live"], v["viewers"]) for v in trending] == [(vid, True, 42)]

    ready = (await upload(live, headers=alice, title="Sunset recorded"))["video"]["id"]
    await live.post(f"/api/v1/videos/{ready}/views")
    trending = (await (await live.get("/api/v1/trending")).json())["items"]
    assert [v["id"] for v in trending] == [vid]  # the upload is not ready yet

    await live.post(f"/api/v1/live/{vid}/end", headers=alice)
    await ingest(live, f"streams/{vid}/vod", {"duration": 10.0, "renditions": ["v720"]})
    found = (await (await live.get("/api/v1/search", params={"q": "sunset"})).json())["items"]
    assert [(v["id"], v["live"], v["viewers"], v["state"]) for v in found] == [
        (vid, False, None, "ready")]


async def test_ingest_is_never_throttled(make_client: MakeClient) -> None:
    client = await make_client(rate_limits=RateLimits(per_ip=Rate(0.01, 5)))
    alice = await signup(client, "alice@example.com")
    made = await create(client, alice)
    publisher = (await authorize(client, made["stream_key"]))["publisher"]
    for _ in range(20):
        await ingest(client, f"streams/{publisher}/heartbeat", {"viewers": 1})
    statuses = [(await client.get("/api/v1/trending")).status for _ in range(5)]
    assert (statuses[0], statuses[-1]) == (200, 429)  # ingest spent nothing of the bucket


async def test_deleting_a_live_video_removes_its_live_objects(live: TestClient,
                                                               store: DirectoryStore) -> None:
    alice = await signup(live, "alice@example.com")
    vid = (await create(live, alice))["video"]["id"]
    await store.write(f"live/{vid}/v720/seg_00001.m4s", _chunks(b"segment"))
    resp = await live.delete(f"/api/v1/videos/{vid}", headers=alice)
    assert resp.status == 204
    assert not [f for f in stored_files(store) if vid in f]
    await authorize(live, "live_gone", 403)
    await ingest(live, f"streams/{vid}/heartbeat", status=404)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_the_document_describes_the_live_routes(live: TestClient) -> None:
    doc = await (await live.get("/api/v1/openapi.json")).json()
    paths = doc["paths"]
    assert paths["/api/v1/live"]["post"]["security"] == [{"userToken": []}]
    for action in ("connected", "gone", "heartbeat", "vod", "fail"):
        op = paths[f"/api/v1/ingest/streams/{{publisher}}/{action}"]["post"]
        assert op["security"] == [{"workerToken": []}] and "429" not in op["responses"]
    assert "429" not in paths["/api/v1/ingest/authorize"]["post"]["responses"]
    assert {"kind", "live", "viewers"} <= set(doc["components"]["schemas"]["Video"]["properties"])


_READY = ("INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at, privacy)"
          " VALUES ('oldvideo1', 'Harbour lights', 'ready', 1, 1, 1, 'public')")


async def _upgraded(db: Database, old: Database) -> None:
    """A database made before live streams (at step 5, with a searchable video) takes step 6:
    the old video is still found, and a video may now be waiting or live."""
    await old.open()
    await old.execute(_READY)
    await old.close()
    await db.open()
    try:
        words = ["harbour"]
        sql = ("SELECT v.id FROM videos v WHERE v.search @@ reel_prefix_query(?::text[])"
               if db.dialect == "postgresql" else
               "SELECT v.id FROM videos_fts JOIN videos v ON v.rowid = videos_fts.rowid"
               " WHERE videos_fts MATCH ?")
        param = words if db.dialect == "postgresql" else match_expression(words)
        assert [r[0] for r in await db.fetchall(sql, (param,))] == ["oldvideo1"]
        await db.execute("UPDATE videos SET state = 'live', kind = 'live' WHERE id = 'oldvideo1'")
        assert [r[0] for r in await db.fetchall(sql, (param,))] == ["oldvideo1"]
        with pytest.raises(IntegrityError):
            await db.execute("UPDATE videos SET state = 'on-air' WHERE id = 'oldvideo1'")
        if db.dialect == "sqlite":
            assert (await db.fetchone("PRAGMA integrity_check"))[0] == "ok"
    finally:
        await db.close()


async def test_sqlite_databases_from_before_live_streams_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    await _upgraded(SQLiteDatabase(path), SQLiteDatabase(path, SQLITE_MIGRATIONS[:5]))


async def test_postgres_databases_from_before_live_streams_upgrade(
        postgres: PostgresServer) -> None:
    name = "t_live_" + uuid.uuid4().hex[:12]
    admin = await asyncpg.connect(postgres.url())
    try:
        await admin.execute(f"CREATE DATABASE {name}")  # empty: not the migrated template
    finally:
        await admin.close()
    url = postgres.url(name)
    try:
        await _upgraded(PostgresDatabase(url), PostgresDatabase(url, PG_MIGRATIONS[:5]))
    finally:
        await postgres.drop_database(url)


@pytest.mark.parametrize("settings", [
    {"rtmp_url": "http://ingest.test/live"}, {"srt_url": "udp://ingest.test:9000"},
    {"grace_seconds": 0}, {"heartbeat_seconds": -1},
])
def test_bad_live_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        LiveSettings(**settings)
