"""`IngestControl` against a real control app on loopback: a stream's whole life as ingest sees it
(admit, connected, heartbeats, gone, a resume, the owner's end, the VOD), the `authorize` adapter
the RTMP and SRT servers take, and a control that is slow or failing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from packager.live.control import Admission, ControlError, ControlUnavailable, IngestControl
from tests.control.conftest import GEO, TOKEN, signup
from tests.live.controlled import live_control
from tests.live.sinks import RecordingSink


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with live_control(tmp_path, grace_seconds=30) as client:
        yield client


@pytest.fixture
async def ingest(control: TestClient) -> AsyncIterator[IngestControl]:
    async with IngestControl(str(control.make_url("/")), TOKEN, timeout=5) as client:
        yield client


async def new_stream(control: TestClient) -> tuple[dict[str, str], str, str]:
    owner = await signup(control, "streamer@example.com")
    resp = await control.post("/api/v1/live", json={"title": "Night market"}, headers=owner)
    assert resp.status == 201, await resp.text()
    made = await resp.json()
    return owner, made["video"]["id"], made["stream_key"]


async def state_of(control: TestClient, video_id: str) -> dict[str, Any]:
    return await (await control.get(f"/api/v1/videos/{video_id}")).json()


async def test_a_stream_from_first_publish_to_vod(control: TestClient,
                                                  ingest: IngestControl) -> None:
    owner, vid, key = await new_stream(control)
    assert await ingest.admit("live_wrong") is None
    first = await ingest.admit(key)
    assert first == Admission(vid, f"{vid}.1", 7200, False, 5.0, 30.0)
    assert await ingest.admit(key) is None  # one publisher at a time
    status = await ingest.connected(first.publisher)
    assert (status.state, status.end, status.disconnect) == ("live", False, False)
    status = await ingest.heartbeat(first.publisher, 12)
    assert (status.end, status.disconnect) == (False, False)
    assert (await state_of(control, vid))["viewers"] == 12

    await ingest.gone(first.publisher)
    await ingest.gone(first.publisher)  # a retry changes nothing
    again = await ingest.admit(key)
    assert again is not None and again.resume and again.video_id == vid
    with pytest.raises(ControlError) as refused:
        await ingest.connected(first.publisher)  # replaced
    assert refused.value.status == 409
    await ingest.connected(again.publisher)

    resp = await control.post(f"/api/v1/live/{vid}/end", headers=owner)
    assert resp.status == 200
    status = await ingest.heartbeat(again.publisher, 3)
    assert (status.state, status.end) == ("processing", True)
    assert await ingest.admit(key) is None  # over
    status = await ingest.vod_done(again.publisher, 61.5, ["v720", "v480", "a128"])
    assert (status.state, status.end) == ("ready", True)
    ready = await state_of(control, vid)
    assert (ready["state"], ready["duration"]) == ("ready", 61.5)
    assert ready["playback_url"] == f"{GEO}/steer/vod/{vid}/master.m3u8"


async def test_vod_failure_is_reported(control: TestClient, ingest: IngestControl) -> None:
    _, vid, key = await new_stream(control)
    admitted = await ingest.admit(key)
    assert admitted is not None
    await ingest.connected(admitted.publisher)
    status = await ingest.vod_failed(admitted.publisher, "no_segments", "nothing was kept")
    assert (status.state, status.end) == ("failed", True)
    assert (await state_of(control, vid))["reason"] == "no_segments: nothing was kept"


async def test_authorizer_asks_control_before_any_sink(control: TestClient,
                                                       ingest: IngestControl) -> None:
    _, vid, key = await new_stream(control)
    started: list[Admission] = []

    async def start(admission: Admission) -> RecordingSink:
        started.append(admission)
        return RecordingSink()

    authorize = ingest.authorizer(start)
    assert await authorize("live", "live_guess") is None
    assert await authorize("other", key) is None  # not an app of ours: control is not asked
    assert started == []
    assert isinstance(await authorize("live", key), RecordingSink)
    assert [a.video_id for a in started] == [vid]
    assert await authorize("live", key) is None  # the first publisher holds it


async def test_unreachable_or_failing_control() -> None:
    calls: list[str] = []

    async def flaky(request: web.Request) -> web.Response:
        calls.append(request.path)
        if len(calls) == 1:
            return web.Response(status=503)
        return web.json_response({"video_id": "abcdef", "state": "live", "end": False,
                                  "disconnect": False, "grace_seconds": 30})

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.5)
        return web.json_response({})

    app = web.Application()
    app.router.add_post("/api/v1/ingest/streams/{publisher}/heartbeat", flaky)
    app.router.add_post("/api/v1/ingest/authorize", slow)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    url = str(server.make_url("/"))
    try:
        async with IngestControl(url, TOKEN, timeout=0.3, backoff=0.01) as client:
            status = await client.heartbeat("abcdef.1", 4)  # retried after the 503
            assert status.state == "live" and len(calls) == 2
            loop = asyncio.get_running_loop()
            began = loop.time()
            assert await client.admit("live_key") is None  # fail closed, within the timeout
            assert loop.time() - began < 2
            with pytest.raises(ControlUnavailable):
                await client.authorize("live_key")
    finally:
        await server.close()
    async with IngestControl(url, TOKEN, timeout=0.3, retries=1, backoff=0.01) as gone:
        with pytest.raises(ControlUnavailable):
            await gone.heartbeat("abcdef.1", 0)
