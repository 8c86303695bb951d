"""The worker flow over HTTP: claim, heartbeat, complete, fail, leases, retries."""

from __future__ import annotations

import asyncio
import time

from aiohttp.test_utils import TestClient

from tests.control.conftest import (
    AUTH,
    GEO,
    MakeClient,
    assert_problem,
    claim,
    upload,
    video,
)


async def test_claim_heartbeat_complete(client: TestClient) -> None:
    up = await upload(client)
    vid = up["video"]["id"]
    job = await claim(client)
    assert job is not None
    assert job["video_id"] == vid
    assert job["source_key"] == f"sources/{vid}/source"
    assert job["output_prefix"] == f"vod/{vid}/"
    assert job["lease_seconds"] == 60
    assert job["attempt"] == 1
    assert job["id"].split(".")[0] == up["job"]["id"]
    assert (await video(client, vid))["state"] == "processing"
    assert await claim(client, "w2") is None  # nothing else to do

    resp = await client.post(f"/api/v1/jobs/{job['id']}/heartbeat",
                             json={"progress": {"done": 3, "total": 10}}, headers=AUTH)
    assert resp.status == 200
    assert await resp.json() == {"lease_seconds": 60}
    assert (await video(client, vid))["progress"] == {"done": 3, "total": 10}
    resp = await client.post(f"/api/v1/jobs/{job['id']}/heartbeat", headers=AUTH)
    assert resp.status == 200  # progress is optional, the body too

    resp = await client.post(f"/api/v1/jobs/{job['id']}/complete",
                             json={"duration": 12.5, "renditions": ["v720", "v360", "a128"]},
                             headers=AUTH)
    assert resp.status == 200, await resp.text()
    ready = await video(client, vid)
    assert ready["state"] == "ready"
    assert ready["duration"] == 12.5
    assert ready["playback_url"] == f"{GEO}/steer/vod/{vid}/master.m3u8"
    assert ready["poster_url"] == f"{GEO}/vod/{vid}/thumbs/poster.jpg"
    assert ready["reason"] is None
    assert ready["progress"] == {"done": 10, "total": 10}  # the worker's last count was 3 of 10

    # the job is over: its lease is gone
    resp = await client.post(f"/api/v1/jobs/{job['id']}/heartbeat", json={}, headers=AUTH)
    await assert_problem(resp, 409)
    resp = await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 1},
                             headers=AUTH)
    await assert_problem(resp, 409)
    text = await (await client.get("/metrics")).text()
    assert 'reel_control_jobs{state="done"} 1.0' in text
    assert 'reel_control_job_events_total{event="completed"} 1.0' in text


async def test_fail_permanent(client: TestClient) -> None:
    vid = (await upload(client))["video"]["id"]
    job = await claim(client)
    resp = await client.post(f"/api/v1/jobs/{job['id']}/fail", headers=AUTH, json={
        "reason": "not_a_video", "detail": "no video stream found", "permanent": True})
    assert resp.status == 200
    assert (await resp.json())["job"]["state"] == "failed"
    failed = await video(client, vid)
    assert failed["state"] == "failed"
    assert failed["reason"] == "not_a_video: no video stream found"
    assert failed["playback_url"] is None
    assert await claim(client) is None


async def test_retries_then_fails_after_max_attempts(make_client: MakeClient) -> None:
    client = await make_client(max_attempts=3, retry_backoff_seconds=0)
    vid = (await upload(client))["video"]["id"]
    for attempt in (1, 2, 3):
        job = await claim(client)
        assert job is not None and job["attempt"] == attempt
        resp = await client.post(f"/api/v1/jobs/{job['id']}/fail", headers=AUTH, json={
            "reason": "encoder_crashed", "detail": f"boom {attempt}", "permanent": False})
        assert resp.status == 200
        state = (await video(client, vid))["state"]
        assert state == ("queued" if attempt < 3 else "failed")
    final = await video(client, vid)
    assert final["reason"] == "encoder_crashed: boom 3"
    assert await claim(client) is None


async def test_retry_waits_for_backoff(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(retry_backoff_seconds=30, clock=lambda: now[0])
    await upload(client)
    job = await claim(client)
    resp = await client.post(f"/api/v1/jobs/{job['id']}/fail", headers=AUTH,
                             json={"reason": "io_error", "detail": "disk full"})
    body = await resp.json()
    assert body["job"]["retry"] is True and body["job"]["retry_in_seconds"] == 30
    now[0] += 29
    assert await claim(client) is None  # not before the backoff
    now[0] += 1
    again = await claim(client)
    assert again is not None and again["attempt"] == 2


async def test_expired_lease_is_claimable_again(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(lease_seconds=60, clock=lambda: now[0])
    vid = (await upload(client))["video"]["id"]
    first = await claim(client, "slow")
    now[0] += 59
    assert await claim(client, "other") is None  # held
    now[0] += 2
    second = await claim(client, "other")
    assert second is not None
    assert second["video_id"] == vid and second["attempt"] == 2
    assert second["id"] != first["id"]

    # the first worker's lease is gone: it is told to stop, and cannot finish or fail the job
    for action, body in (("heartbeat", {}), ("complete", {"duration": 1.0}),
                         ("fail", {"reason": "x", "permanent": True})):
        resp = await client.post(f"/api/v1/jobs/{first['id']}/{action}", json=body,
                                 headers=AUTH)
        await assert_problem(resp, 409)
    resp = await client.post(f"/api/v1/jobs/{second['id']}/heartbeat", json={}, headers=AUTH)
    assert resp.status == 200
    resp = await client.post(f"/api/v1/jobs/{second['id']}/complete",
                             json={"duration": 2.0, "renditions": []}, headers=AUTH)
    assert resp.status == 200
    assert (await video(client, vid))["state"] == "ready"


async def test_heartbeats_keep_the_lease(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(lease_seconds=60, clock=lambda: now[0])
    await upload(client)
    job = await claim(client)
    for _ in range(4):  # 180 s in all, three times the lease
        now[0] += 45
        resp = await client.post(f"/api/v1/jobs/{job['id']}/heartbeat", json={}, headers=AUTH)
        assert resp.status == 200
        assert await claim(client, "thief") is None


async def test_lease_expiry_counts_as_an_attempt(make_client: MakeClient) -> None:
    now = [time.time()]
    client = await make_client(lease_seconds=60, max_attempts=2, clock=lambda: now[0])
    vid = (await upload(client))["video"]["id"]
    assert (await claim(client))["attempt"] == 1
    now[0] += 61
    assert (await claim(client))["attempt"] == 2
    now[0] += 61
    assert await claim(client) is None  # out of attempts: failed, not claimed a third time
    failed = await video(client, vid)
    assert failed["state"] == "failed"
    assert failed["reason"].startswith("lease_expired")


async def test_concurrent_claims_never_share_a_job(client: TestClient) -> None:
    videos = {(await upload(client))["video"]["id"] for _ in range(5)}
    results = await asyncio.gather(*(claim(client, f"w{i}") for i in range(12)))
    jobs = [job for job in results if job is not None]
    assert len(jobs) == 5
    assert {job["video_id"] for job in jobs} == videos
    assert len({job["id"] for job in jobs}) == 5


async def test_worker_endpoints_need_the_token(client: TestClient) -> None:
    await upload(client)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        resp = await client.post("/api/v1/jobs/claim", json={"worker": "w"}, headers=headers)
        await assert_problem(resp, 401)
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        for action in ("heartbeat", "complete", "fail"):
            resp = await client.post(f"/api/v1/jobs/abc.1/{action}", json={}, headers=headers)
            await assert_problem(resp, 401)
    assert await claim(client) is not None  # nothing was claimed without the token


async def test_bad_bodies_are_400(client: TestClient) -> None:
    await upload(client)
    resp = await client.post("/api/v1/jobs/claim", data=b"{not json", headers=AUTH)
    await assert_problem(resp, 400)
    resp = await client.post("/api/v1/jobs/claim", json=[1, 2], headers=AUTH)
    await assert_problem(resp, 400)
    job = await claim(client)
    url = f"/api/v1/jobs/{job['id']}"
    for action, body in (
        ("heartbeat", {"progress": {"done": "3", "total": 10}}),
        ("heartbeat", {"progress": [1, 2]}),
        ("complete", {"renditions": ["v720"]}),
        ("complete", {"duration": "long"}),
        ("complete", {"duration": True}),
        ("complete", {"duration": 3.0, "renditions": [1]}),
        ("fail", {"detail": "no reason"}),
        ("fail", {"reason": "x", "permanent": "yes"}),
    ):
        resp = await client.post(f"{url}/{action}", json=body, headers=AUTH)
        await assert_problem(resp, 400)
    # none of those changed the job
    resp = await client.post(f"{url}/heartbeat", json={}, headers=AUTH)
    assert resp.status == 200


async def test_unknown_job_is_404(client: TestClient) -> None:
    for job_id in ("nosuchjob.1", "nosuchjob", "bad..id", "x" * 100):
        resp = await client.post(f"/api/v1/jobs/{job_id}/heartbeat", json={}, headers=AUTH)
        await assert_problem(resp, 404)


async def test_bare_job_id_means_current_lease(client: TestClient) -> None:
    up = await upload(client)
    await claim(client)
    resp = await client.post(f"/api/v1/jobs/{up['job']['id']}/complete",
                             json={"duration": 1.5}, headers=AUTH)
    assert resp.status == 200
    assert (await video(client, up["video"]["id"]))["state"] == "ready"


async def test_json_body_in_many_pieces_and_too_large(client: TestClient) -> None:
    await upload(client)

    async def trickle():
        for piece in (b'{"wor', b'ker": ', b'"slow', b'-sender"}'):
            await asyncio.sleep(0.01)
            yield piece

    resp = await client.post("/api/v1/jobs/claim", data=trickle(),
                             headers={**AUTH, "Content-Type": "application/json"})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/api/v1/jobs/claim", json={"worker": "x" * 70_000}, headers=AUTH)
    await assert_problem(resp, 413)


async def test_preview_while_processing(client: TestClient) -> None:
    vid = (await upload(client))["video"]["id"]
    job = await claim(client)
    assert (await video(client, vid))["preview_url"] is None  # processing, nothing playable yet
    beat = f"/api/v1/jobs/{job['id']}/heartbeat"
    for bad in ("../index.m3u8", "v144/../../x/index.m3u8", "v144/master.m3u8", "/v144/index.m3u8",
                "v144/index.m3u8?x=1", "_v/index.m3u8", "v" * 33 + "/index.m3u8", 144, ""):
        await assert_problem(await client.post(beat, json={"preview": bad}, headers=AUTH), 400)
    assert (await video(client, vid))["preview_url"] is None
    resp = await client.post(beat, json={"preview": "v144/index.m3u8",
                                         "progress": {"done": 1, "total": 9}}, headers=AUTH)
    assert resp.status == 200, await resp.text()
    seen = await video(client, vid)
    assert seen["preview_url"] == f"{GEO}/vod/{vid}/v144/index.m3u8"
    assert seen["playback_url"] is None and seen["progress"] == {"done": 1, "total": 9}
    resp = await client.post(beat, json={"progress": {"done": 2, "total": 9}}, headers=AUTH)
    assert (await video(client, vid))["preview_url"] == f"{GEO}/vod/{vid}/v144/index.m3u8"
    await client.post(f"/api/v1/jobs/{job['id']}/complete", json={"duration": 3}, headers=AUTH)
    ready = await video(client, vid)
    assert ready["preview_url"] is None  # the real playlist takes over
    assert ready["playback_url"] == f"{GEO}/steer/vod/{vid}/master.m3u8"
    doc = await (await client.get("/api/v1/openapi.json")).json()
    assert "preview" in doc["components"]["schemas"]["Heartbeat"]["properties"]
    assert "preview_url" in doc["components"]["schemas"]["Video"]["properties"]


async def test_preview_is_dropped_when_the_job_is_retried(client: TestClient) -> None:
    vid = (await upload(client))["video"]["id"]
    job = await claim(client)
    await client.post(f"/api/v1/jobs/{job['id']}/heartbeat", json={"preview": "v144/index.m3u8"},
                      headers=AUTH)
    await client.post(f"/api/v1/jobs/{job['id']}/fail", json={"reason": "oom"}, headers=AUTH)
    seen = await video(client, vid)
    assert seen["state"] == "queued" and seen["preview_url"] is None
