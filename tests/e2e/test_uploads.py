"""Creators upload through the API; a bad upload fails with a reason and harms nothing else."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from packager.testclip import make_test_clip
from tests.e2e.conftest import Demo


async def _creator(http: aiohttp.ClientSession, control: str) -> dict[str, str]:
    """A fresh creator account's Authorization header: uploads need a signed-in user."""
    account = {"email": f"creator-{os.urandom(4).hex()}@example.com", "password": "e2e password"}
    async with http.post(f"{control}/api/v1/users", json=account) as resp:
        assert resp.status == 201, await resp.text()
    async with http.post(f"{control}/api/v1/sessions", json=account) as resp:
        assert resp.status == 201, await resp.text()
        return {"Authorization": f"Bearer {(await resp.json())['token']}"}


async def _upload(http: aiohttp.ClientSession, control: str, path: Path, title: str,
                  auth: dict[str, str] | None = None) -> dict:
    auth = auth or await _creator(http, control)
    with open(path, "rb") as f:  # noqa: ASYNC230 - a small test file
        form = aiohttp.FormData()
        form.add_field("title", title)
        form.add_field("file", f, filename=path.name, content_type="application/octet-stream")
        async with http.post(f"{control}/api/v1/videos", data=form, headers=auth) as resp:
            assert resp.status == 202, await resp.text()
            body = await resp.json()
    assert body["job"]["id"]
    return body["video"]


async def _until_settled(http: aiohttp.ClientSession, control: str, video_id: str) -> dict:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        async with http.get(f"{control}/api/v1/videos/{video_id}") as resp:
            video = await resp.json()
        if video["state"] in ("ready", "failed"):
            return video
        await asyncio.sleep(0.3)
    raise AssertionError(f"video {video_id} still {video['state']}")


@pytest.mark.asyncio
async def test_not_a_video_fails_with_a_reason_and_service_keeps_working(
    demo: Demo, tmp_path: Path
) -> None:
    garbage = tmp_path / "holiday.mp4"
    garbage.write_bytes(os.urandom(200_000))
    clip = make_test_clip(tmp_path / "small.mp4", seconds=3, width=426, height=240, fps=24)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        bad = await _upload(http, demo.control, garbage, "not a video")
        assert bad["state"] == "queued"
        failed = await _until_settled(http, demo.control, bad["id"])
        assert failed["state"] == "failed"
        assert "not_a_video" in failed["reason"]
        assert failed["playback_url"] is None
        # Nothing was published for it. Without a playback token, a video the origin does not
        # know gets the same 403 as a private one (DESIGN.md: the answer never tells whether a
        # private video exists).
        async with http.get(f"{demo.origin}/vod/{bad['id']}/master.m3u8") as resp:
            assert resp.status == 403
            assert resp.headers["Content-Type"].startswith("application/problem+json")

        # The service keeps working: health, the earlier video, and a new upload all fine.
        async with http.get(f"{demo.control}/healthz") as resp:
            assert resp.status == 200
        async with http.get(f"{demo.control}/api/v1/videos/{demo.video_id}") as resp:
            assert (await resp.json())["state"] == "ready"
        good = await _upload(http, demo.control, clip, "small and fine")
        ready = await _until_settled(http, demo.control, good["id"])
        assert ready["state"] == "ready", ready
        async with http.get(ready["playback_url"]) as resp:  # follows geo's redirect
            assert resp.status == 200
            assert "#EXT-X-STREAM-INF" in await resp.text()


@pytest.mark.asyncio
async def test_unknown_video_is_a_problem_document(demo: Demo) -> None:
    async with aiohttp.ClientSession() as http, http.get(
        f"{demo.control}/api/v1/videos/nosuchvideo1"
    ) as resp:
        assert resp.status == 404
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert (await resp.json())["status"] == 404


@pytest.mark.asyncio
async def test_a_processing_video_is_playable_before_it_is_finished(demo: Demo, tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "longer.mp4", seconds=24, width=854, height=480, fps=30)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        video = await _upload(http, demo.control, clip, "watch me early")
        deadline = time.monotonic() + 180
        while video["state"] != "ready" and not video.get("preview_url"):
            assert time.monotonic() < deadline and video["state"] != "failed", video
            await asyncio.sleep(0.2)
            async with http.get(f"{demo.control}/api/v1/videos/{video['id']}") as resp:
                video = await resp.json()
        assert video["state"] == "processing", "finished before a preview was seen"
        assert video["progress"] is None or video["progress"]["done"] < video["progress"]["total"]
        # Through geo and the edge: a growing EVENT playlist whose segments play.
        async with http.get(video["preview_url"]) as resp:
            assert resp.status == 200
            text = await resp.text()
            edge_url = str(resp.url)
        assert "#EXT-X-PLAYLIST-TYPE:EVENT" in text and "#EXT-X-ENDLIST" not in text
        segment = next(line for line in text.splitlines() if line.endswith(".m4s"))
        async with http.get(edge_url.rsplit("/", 1)[0] + "/" + segment) as resp:
            assert resp.status == 200 and resp.headers["Content-Type"] == "video/iso.segment"
        # Polled once a second, the progress rises steadily, not in a few jumps.
        seen = set()
        while video["state"] == "processing":
            if video["progress"]:
                seen.add(video["progress"]["done"] / video["progress"]["total"])
            assert time.monotonic() < deadline
            await asyncio.sleep(1)
            async with http.get(f"{demo.control}/api/v1/videos/{video['id']}") as resp:
                video = await resp.json()
        assert len(seen) >= 3 and all(0 < s < 1 for s in seen), seen
        ready = await _until_settled(http, demo.control, video["id"])
        assert ready["state"] == "ready" and ready["preview_url"] is None
        assert ready["progress"]["done"] == ready["progress"]["total"]


@pytest.mark.asyncio
async def test_deleting_a_video_removes_it_from_origin_and_edges(demo: Demo, tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "gone.mp4", seconds=3, width=426, height=240, fps=24)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        auth = await _creator(http, demo.control)
        video = await _upload(http, demo.control, clip, "soon gone", auth)
        assert (await _until_settled(http, demo.control, video["id"]))["state"] == "ready"
        segment = f"{demo.edges[0]}/vod/{video['id']}/v144/seg_00001.m4s"
        for _ in range(2):  # now cached at the edge
            async with http.get(segment) as resp:
                assert resp.status == 200
        assert resp.headers["X-Cache"] == "HIT"

        async with http.delete(f"{demo.control}/api/v1/videos/{video['id']}", headers=auth) as resp:
            assert resp.status in (200, 204), await resp.text()
        async with http.get(segment) as resp:
            # Purged from the edge, gone from the origin: now an unknown video, whose tokenless
            # answer is the same 403 a private one gets (no byte, and no hint it ever existed).
            assert resp.status == 403 and resp.headers["X-Cache"] == "MISS"
            assert resp.headers["Content-Type"].startswith("application/problem+json")
        async with http.get(f"{demo.control}/api/v1/videos/{video['id']}") as resp:
            assert resp.status == 404
