"""The failure drill, live: hls.js (lowLatencyMode) in headless Chromium plays a live stream
through geo's steered master (geo -> edge -> origin -> ingest); the test kills the edge in use,
then the origin nearest to the edge that took over. Playback goes on each time with at most one
short stall and no fatal error. Real processes, started as `reel up` starts them, each on its
own so the test can kill one; ffmpeg publishes a test pattern it makes itself.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Page

from reel.supervisor import Supervisor
from reel.up import Stack
from tests.e2e.conftest import free_port_base
from tests.e2e.test_failover_drill import GEO_TUNING, _edge_fetches, _get, _healthy, _until
from tests.e2e.test_live import call, publish_pattern
from tests.player import player_page

BOUND = 120.0  # seconds: a bound on waits on a busy machine, never a measure
EU, AP = 0, 1
# Stalls are counted from the video element's `waiting` events once playback is under way.
PAGE_HOOKS = """() => {
    const v = document.querySelector('video');
    window.stalls = [];
    v.addEventListener('waiting', () => {
        if (v.currentTime > 0) window.stalls.push({at: v.currentTime, wall: performance.now(), ms: null});
    });
    v.addEventListener('playing', () => {
        const last = window.stalls[window.stalls.length - 1];
        if (last && last.ms === null) last.ms = performance.now() - last.wall;
    });
}"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Supervisor, str]]:
    """Geo, control, ingest, an origin and an edge per region, and a live stream on the air:
    (the stack, its services, the video's playback URL)."""
    data = tmp_path_factory.mktemp("live-drill")
    stack = Stack(data, "127.0.0.1", free_port_base())
    commands = stack.commands()
    commands["geo"] += GEO_TUNING
    del commands["worker"]
    services = stack.supervisor(commands)
    services.start(list(commands))
    publisher: subprocess.Popen | None = None
    try:
        for url in [stack.geo, stack.control, stack.ingest, *(stack.origin(i) for i in range(2)),
                    *(stack.edge(i) for i in range(2))]:
            _until(lambda url=url: _healthy(url), f"{url} healthy", timeout=BOUND)
        account = {"email": f"drill-{time.time_ns()}@reel.invalid", "password": "live-password-1",
                   "name": "live drill"}
        assert call("POST", f"{stack.control}/api/v1/users", account)[0] == 201
        token = call("POST", f"{stack.control}/api/v1/sessions", account)[1]["token"]
        status, created = call("POST", f"{stack.control}/api/v1/live", {"title": "live drill"}, token)
        assert status == 201, created
        publisher = publish_pattern(created["ingest"]["rtmp"], 600)
        video_id = created["video"]["id"]
        _until(lambda: call("GET", f"{stack.control}/api/v1/videos/{video_id}")[1].get("state") == "live",
               "the stream is live", timeout=BOUND, pause=lambda: time.sleep(0.5))
        playback = call("GET", f"{stack.control}/api/v1/videos/{video_id}")[1]["playback_url"]
        yield stack, services, playback
    finally:
        if publisher is not None and publisher.poll() is None:
            publisher.terminate()
            publisher.wait(30)
        services.stop()


def test_the_steered_live_master_and_the_geo_redirect_lead_to_the_edge(stack) -> None:
    stack_, _, playback = stack
    assert "/steer/live/" in playback
    status, body, _ = _get(playback)
    assert status == 200 and b"#EXT-X-CONTENT-STEERING" in body and b"#EXT-X-STREAM-INF" in body
    assert body.count(stack_.edge(EU).encode()) >= 1 and body.count(stack_.edge(AP).encode()) >= 1
    live_path = playback.split("/steer", 1)[1]  # /live/{id}/master.m3u8
    status, _, headers = _get(stack_.geo + live_path)
    assert status == 302 and headers["Location"].startswith(stack_.edge(EU) + "/live/")
    status, body, headers = _get(headers["Location"])
    assert status == 200 and b"#EXT-X-STREAM-INF" in body and "Age" in headers


def test_live_playback_survives_a_failing_edge_then_a_failing_origin(stack, page: Page) -> None:
    stack_, services, playback = stack
    edge_eu, edge_ap = stack_.edge(EU), stack_.edge(AP)
    origin_eu = stack_.origin(EU)
    media: list[str] = []
    page.on("response", lambda r: media.append(r.url) if r.status == 200 and ".m4s" in r.url else None)
    config = {"lowLatencyMode": True, "backBufferLength": 10}
    with player_page() as url:
        page.goto(f"{url}?src={quote(playback)}&config={quote(json.dumps(config))}")
        page.wait_for_function("() => window.hls && window.hls.levels.length >= 1", timeout=BOUND * 1000)
        page.evaluate(PAGE_HOOKS)
        page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")

        def until(check: Callable[[], object], what: str, timeout: float = BOUND) -> None:
            _until(check, what, timeout, pause=lambda: page.wait_for_timeout(100))

        def now() -> float:
            return page.evaluate("() => document.querySelector('video').currentTime")

        def stalls() -> list[dict]:
            return page.evaluate("() => window.stalls")

        def fatal() -> list[dict]:
            return [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]

        until(lambda: now() > 3, "live playback started")
        assert media and all(u.startswith(edge_eu) for u in media)
        # What this machine does without a failure, over as long as each step below lasts.
        before = len(stalls())
        started = now()
        until(lambda: now() > started + 8, "baseline playback")
        baseline = len(stalls()) - before

        # 1. The edge in use dies: geo steers away, hls.js takes the other Pathway.
        before, seen = len(stalls()), len(media)
        services.procs["edge-eu-west"].send_signal(signal.SIGKILL)
        killed_at = now()
        until(lambda: _steering_live(stack_, playback)["PATHWAY-PRIORITY"] == ["ap-southeast"],
              "geo steers away from the dead edge", timeout=15)
        until(lambda: sum(u.startswith(edge_ap) for u in media[seen:]) >= 3, "parts from the other edge")
        until(lambda: now() > killed_at + 8, "playback goes on after the edge died")
        assert not fatal()
        assert len(stalls()) - before <= baseline + 1, (baseline, stalls()[before:])

        # 2. The origin nearest to that edge dies: the edge asks the other origin (same ingest).
        before, seen = len(stalls()), len(media)
        fetched = _edge_fetches(edge_ap).get(origin_eu, 0.0)
        services.procs["origin-ap-southeast"].send_signal(signal.SIGKILL)
        killed_at = now()
        until(lambda: sum(u.startswith(edge_ap) for u in media[seen:]) >= 3, "parts after the origin died")
        until(lambda: now() > killed_at + 8, "playback goes on after the origin died")
        assert _edge_fetches(edge_ap).get(origin_eu, 0.0) > fetched
        assert not fatal()
        assert len(stalls()) - before <= baseline + 1, (baseline, stalls()[before:])
        assert page.evaluate("() => document.querySelector('video').error") is None


def _steering_live(stack: Stack, playback: str) -> dict:
    video_id = playback.split("/steer/live/", 1)[1].split("/")[0]
    status, body, _ = _get(f"{stack.geo}/steer/live/{video_id}/steering.json?p=eu-west,ap-southeast")
    assert status == 200, body
    return json.loads(body)

