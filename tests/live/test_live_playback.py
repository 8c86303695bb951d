"""hls.js in headless Chromium plays the live stream, with lowLatencyMode on (parts, blocking
reloads) and off (whole segments at HOLD-BACK), switches rungs, and meets no fatal error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from playwright.sync_api import Page

from tests.live.rig import LiveRig, publication, running
from tests.player import player_page


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRig]:
    root = tmp_path_factory.mktemp("live-play")
    yield from running(publication(60, root / "clip.mp4"), root, video_id="play0001")


def _now(page: Page) -> float:
    return page.evaluate("() => document.querySelector('video').currentTime")


def watch(page: Page, rig: LiveRig, low_latency: bool) -> dict:
    """Start playing, force a switch to the other rung, play on three more seconds."""
    config = json.dumps({"lowLatencyMode": low_latency})
    with player_page() as url:
        page.goto(f"{url}?src={quote(rig.url + '/master.m3u8')}&config={quote(config)}")
        page.wait_for_function("() => window.hls && window.hls.levels.length >= 2", timeout=30_000)
        page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")
        page.wait_for_function("() => document.querySelector('video').currentTime > 1",
                               timeout=30_000)
        page.evaluate("() => { window.hls.currentLevel = window.hls.currentLevel === 0 ? 1 : 0; }")
        page.wait_for_function("() => new Set(window.playedLevels).size >= 2", timeout=30_000)
        after = _now(page) + 3
        page.wait_for_function(f"() => document.querySelector('video').currentTime > {after}",
                               timeout=30_000)
        return page.evaluate("""() => {
            const level = window.hls.levels[window.hls.currentLevel];
            const d = level.details;
            return {errors: window.hlsErrors, played: [...new Set(window.playedLevels)],
                    media_error: document.querySelector('video').error,
                    parts: (d.partList || []).length, can_block: d.canBlockReload,
                    live: d.live, latency: window.hls.latency, hold_back: d.holdBack,
                    part_hold_back: d.partHoldBack};
        }""")


def test_hlsjs_plays_low_latency_and_switches_rungs(rig: LiveRig, page: Page) -> None:
    seen = watch(page, rig, low_latency=True)
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["media_error"] is None
    assert len(seen["played"]) == 2
    assert seen["live"] and seen["can_block"] and seen["parts"] > 0
    assert seen["part_hold_back"] >= 3 * 0.33
    # Behind the live edge by about PART-HOLD-BACK, not by HOLD-BACK (a bound, not a speed).
    assert seen["latency"] < seen["hold_back"] + 1, seen


def test_hlsjs_without_low_latency_plays_at_hold_back(rig: LiveRig, page: Page) -> None:
    seen = watch(page, rig, low_latency=False)
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["media_error"] is None and len(seen["played"]) == 2 and seen["live"]
