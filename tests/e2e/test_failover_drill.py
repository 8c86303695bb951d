"""The failure drill: a region fails while hls.js plays through geo with Content Steering.

Real processes, started the way `reel up` starts them (reel.up.Stack.supervisor) but each on its own so the
test can kill one: geo, one origin and one edge per region, all on one packaged clip. hls.js in
headless Chromium plays the steered master; the test kills the edge in use, then the origin
nearest to the edge that took over, then brings both back.
"""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Page
from prometheus_client.parser import text_string_to_metric_families

from packager import package
from packager.testclip import make_test_clip
from reel.supervisor import Supervisor
from reel.up import REGIONS, Stack
from tests.e2e.conftest import free_port_base
from tests.player import player_page

VIDEO = "drill01"
CLIP_SECONDS = 50
# Fast probes and a one-second steering TTL, so the drill takes seconds, not minutes.
GEO_TUNING = ["--probe-interval", "0.3", "--probe-timeout", "0.5", "--fall", "2", "--rise", "3",
              "--steering-ttl", "1"]
# A short buffer, so hls.js keeps fetching through every step of the drill.
PLAYER_CONFIG = {"maxBufferLength": 4, "maxMaxBufferLength": 6, "backBufferLength": 10}
EU, AP = 0, 1  # REGIONS: eu-west (the default region: 127.0.0.1 is in no GeoIP database), ap


def _get(url: str) -> tuple[int, bytes, dict[str, str]]:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(url, timeout=5) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def _until(check: Callable[[], object], what: str, timeout: float = 30.0,
           pause: Callable[[], None] = lambda: time.sleep(0.1)) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached in {timeout:.0f} s: {what}")
        pause()


def _healthy(url: str) -> bool:
    try:
        return _get(url + "/healthz")[0] == 200
    except OSError:
        return False


@pytest.fixture(scope="module")
def drill(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Supervisor]]:
    """The stack, and its services (never polled, so a service killed stays down until the test
    starts it again)."""
    data = tmp_path_factory.mktemp("drill")
    stack = Stack(data, "127.0.0.1", free_port_base())
    clip = make_test_clip(data / "clip.mp4", seconds=CLIP_SECONDS, width=426, height=240, fps=24)
    package(clip, stack.store / "vod" / VIDEO, segment_seconds=2.0)
    commands = stack.commands()
    commands["geo"] += GEO_TUNING
    services = stack.supervisor(commands)
    services.start(["geo", *(f"{kind}-{region}" for region, _, _ in REGIONS for kind in ("origin", "edge"))])
    try:
        for url in [stack.geo, *(stack.origin(i) for i in range(2)), *(stack.edge(i) for i in range(2))]:
            _until(lambda url=url: _healthy(url), f"{url} healthy")
        yield stack, services
    finally:
        services.stop()


def _steering(stack: Stack) -> dict:
    status, body, _ = _get(f"{stack.geo}/steer/vod/{VIDEO}/steering.json?p=eu-west,ap-southeast")
    assert status == 200, body
    return json.loads(body)


def _edge_fetches(edge: str) -> dict[str, float]:
    """Segments and playlists an edge got from each origin (200s)."""
    text = _get(edge + "/metrics")[1].decode()
    fetched: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "reel_edge_upstream_fetches_total" and sample.labels["status"] == "200":
                fetched[sample.labels["origin"]] = sample.value
    return fetched


@pytest.fixture
def player() -> Iterator[str]:
    with player_page() as url:
        yield url


def test_playback_survives_a_failing_edge_and_origin(
        drill: tuple[Stack, Supervisor], player: str, page: Page) -> None:
    stack, services = drill
    edge_eu, edge_ap = stack.edge(EU), stack.edge(AP)
    origin_eu, origin_ap = stack.origin(EU), stack.origin(AP)
    media: list[str] = []  # URLs of media segments hls.js got, in order
    page.on("response", lambda r: media.append(r.url)
            if r.status == 200 and r.url.endswith(".m4s") else None)

    master = f"{stack.geo}/steer/vod/{VIDEO}/master.m3u8"
    page.goto(f"{player}?src={quote(master)}&config={quote(json.dumps(PLAYER_CONFIG))}")
    page.wait_for_function("() => window.hls && window.hls.levels.length >= 2", timeout=30_000)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")

    def until(check: Callable[[], object], what: str, timeout: float = 30.0) -> None:
        # Waiting through Playwright, so it records the responses meanwhile.
        _until(check, what, timeout, pause=lambda: page.wait_for_timeout(100))

    def now() -> float:
        return page.evaluate("() => document.querySelector('video').currentTime")

    def plays_past(seconds: float) -> Callable[[], bool]:
        return lambda: now() > seconds

    def fatal() -> list[dict]:
        return [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]

    until(plays_past(2.0), "playback started")
    # 127.0.0.1 is unplaceable: the default region's edge serves it.
    assert media and all(url.startswith(edge_eu) for url in media)

    # 1. The edge in use dies. Geo takes its Pathway out of the steering manifest; hls.js moves
    #    to the next Pathway and plays on.
    services.procs["edge-eu-west"].send_signal(signal.SIGKILL)
    killed_at, seen = now(), len(media)
    until(lambda: _steering(stack)["PATHWAY-PRIORITY"] == ["ap-southeast"],
           "geo steers away from the dead edge", timeout=10)
    until(lambda: sum(url.startswith(edge_ap) for url in media[seen:]) >= 3,
           "segments from the other region's edge")
    until(plays_past(killed_at + 6), "playback goes on after the edge died")
    assert not fatal()
    assert _get(f"{stack.geo}/vod/{VIDEO}/master.m3u8")[2]["Location"].startswith(edge_ap)

    # 2. The origin nearest to that edge dies: the edge fails over to the next origin.
    services.procs["origin-ap-southeast"].send_signal(signal.SIGKILL)
    before = _edge_fetches(edge_ap).get(origin_eu, 0.0)
    killed_at, seen = now(), len(media)
    until(lambda: sum(url.startswith(edge_ap) for url in media[seen:]) >= 3,
           "segments after the origin died")
    until(plays_past(killed_at + 6), "playback goes on after the origin died")
    assert _edge_fetches(edge_ap).get(origin_eu, 0.0) > before  # served from the far origin
    assert not fatal()

    # 3. Both come back (same ports): after the hysteresis window geo routes to the edge again
    #    and the edge goes back to its own region's origin.
    services.start(["edge-eu-west", "origin-ap-southeast"])
    until(lambda: _steering(stack)["PATHWAY-PRIORITY"] == ["eu-west", "ap-southeast"],
           "the edge is first again for this client")
    assert _get(f"{stack.geo}/vod/{VIDEO}/master.m3u8")[2]["Location"].startswith(edge_eu)
    until(lambda: json.loads(_get(edge_ap + "/healthz")[1])["upstreams"][origin_ap],
           "the edge trusts its own origin again")
    still_playing = now()
    until(plays_past(still_playing + 2), "playback still going")
    assert not fatal()
    assert page.evaluate("() => document.querySelector('video').error") is None
