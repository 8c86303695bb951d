"""hls.js in Chromium on the top rung when ingest drops it to keep up with real time: the player
moves to the rung left and plays on (no fatal error, no stall for the rest of the stream)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.live.rig import LiveRig, publication, running
from tests.player import player_page, start_playing


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LiveRig]:
    yield from running(publication(40, tmp_path / "clip.mp4"), tmp_path, video_id="drop0001")


def test_hlsjs_leaves_a_dropped_rung_and_plays_on(rig: LiveRig, page: Page) -> None:
    # the top rung from the start, and a bandwidth estimate that keeps it there
    config = {"lowLatencyMode": True, "startLevel": 1, "abrEwmaDefaultEstimate": 5e7,
              "testBandwidth": False}
    with player_page() as url:
        start_playing(page, url, rig.url + '/master.m3u8', config, levels=2)
        page.wait_for_function("""() => document.querySelector('video').currentTime > 2
            && window.hls.levels[window.hls.currentLevel]?.height == 360""", timeout=60_000)
        at = page.evaluate("() => document.querySelector('video').currentTime")
        rig.loop.call_soon_threadsafe(rig.stream._dropped, "v360")
        page.wait_for_function(f"""() => document.querySelector('video').currentTime > {at + 6}
            && window.hls.levels[window.hls.currentLevel]?.height == 240""", timeout=60_000)
        seen = page.evaluate(
            "() => ({errors: window.hlsErrors, error: document.querySelector('video').error})")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["error"] is None
