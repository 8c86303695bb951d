"""Live on `reel up`: a creator makes a live stream through the API and publishes with ffmpeg;
hls.js plays it through geo's steered master (edge -> origin -> ingest) with lowLatencyMode; the
owner ends it and the same video becomes a ready VOD. `reel up --demo` has its own live test
pattern on the air too."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from playwright.sync_api import Page

from tests.e2e.conftest import Demo, demo_stack
from tests.player import player_page, start_playing

BOUND = 120.0  # seconds: a bound on waits on a busy machine, never a measure


def call(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method, data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json",
                                              **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The whole `reel up --demo`, its live test pattern included, for this module only."""
    yield from demo_stack(tmp_path_factory)


def until_state(demo: Demo, video_id: str, wanted: str) -> dict:
    deadline = time.monotonic() + BOUND
    while True:
        video = call("GET", f"{demo.control}/api/v1/videos/{video_id}")[1]
        if video.get("state") == wanted:
            return video
        assert time.monotonic() < deadline, f"never {wanted}: {video}"
        time.sleep(0.5)


@pytest.fixture
def creator(demo: Demo) -> str:
    account = {"email": f"live-{time.time_ns()}@reel.invalid", "password": "live-password-1",
               "name": "live creator"}
    assert call("POST", f"{demo.control}/api/v1/users", account)[0] == 201
    status, session = call("POST", f"{demo.control}/api/v1/sessions", account)
    assert status == 201
    return session["token"]


def publish_pattern(rtmp: str, seconds: int) -> subprocess.Popen:
    """ffmpeg publishing a 320x240 test pattern and a tone (1 s GOP) in real time to `rtmp`."""
    return subprocess.Popen(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
         "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
         "-c:a", "aac", "-ac", "2", "-f", "flv", rtmp],
        stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def publishing(demo: Demo, creator: str) -> Iterator[tuple[dict, subprocess.Popen]]:
    status, created = call("POST", f"{demo.control}/api/v1/live", {"title": "e2e live"}, creator)
    assert status == 201, created
    assert created["ingest"]["rtmp"].endswith("/live/" + created["stream_key"])
    publisher = publish_pattern(created["ingest"]["rtmp"], 300)
    try:
        yield created, publisher
    finally:
        if publisher.poll() is None:
            publisher.terminate()
            publisher.wait(30)


def test_the_demo_has_a_live_test_pattern(demo: Demo) -> None:
    live = demo.up.wait_for(r"demo live\s+(\S+) is live").group(1)
    assert call("GET", f"{demo.control}/api/v1/videos/{live}")[1]["state"] == "live"


def test_a_live_stream_plays_through_the_steered_master_then_becomes_a_vod(
        demo: Demo, creator: str, publishing: tuple[dict, subprocess.Popen], page: Page) -> None:
    created, publisher = publishing
    video_id = created["video"]["id"]
    video = until_state(demo, video_id, "live")
    assert "/steer/live/" in video["playback_url"]
    with player_page() as url:
        start_playing(page, url, video["playback_url"], {"lowLatencyMode": True},
                      timeout=BOUND * 1000)
        page.wait_for_function("() => document.querySelector('video').currentTime > 3",
                               timeout=BOUND * 1000)
        seen = page.evaluate("""() => {
            const d = window.hls.levels[window.hls.currentLevel].details;
            return {errors: window.hlsErrors, live: d.live, can_block: d.canBlockReload,
                    parts: (d.partList || []).length};
        }""")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["live"] and seen["can_block"] and seen["parts"] > 0

    assert call("POST", f"{demo.control}/api/v1/live/{video_id}/end", None, creator)[0] in (200, 202)
    publisher.wait(BOUND)  # ingest cut it off at its next heartbeat
    vod = until_state(demo, video_id, "ready")
    assert "/steer/vod/" in vod["playback_url"] or "/vod/" in vod["playback_url"]
    with urllib.request.urlopen(vod["playback_url"], timeout=30) as resp:
        assert b"#EXT-X-STREAM-INF" in resp.read()
