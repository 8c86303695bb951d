"""A video still processing: its watch page shows the progress and plays the preview rendition
(the first one the worker finished), then the real thing once it is ready."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser, expect

from packager.testclip import make_test_clip
from tests.e2e.conftest import Demo
from tests.web.browser import assert_accessible, context, screenshot
from tests.web.conftest import new_account


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("clip") / "longer.mp4", seconds=24,
                          width=854, height=480, fps=30)


def test_processing_shows_progress_then_preview_then_the_video(demo: Demo, browser: Browser,
                                                               long_clip: Path) -> None:
    session = new_account(demo.control, "Patient Creator")
    with long_clip.open("rb") as f:
        resp = requests.post(demo.control + "/api/v1/videos", timeout=60,
                             headers={"Authorization": f"Bearer {session['token']}"},
                             files={"file": ("longer.mp4", f, "video/mp4")},
                             data={"title": "watch me early"})
    assert resp.status_code == 202, resp.text
    video_id = resp.json()["video"]["id"]
    with context(browser) as (ctx, console):
        page = ctx.new_page()
        page.goto(f"{demo.control}/watch/{video_id}")
        # queued, or already taken by the worker when the page opens
        expect(page.locator("#status-text")).to_contain_text(
            re.compile("Waiting to be processed|Processing"))
        assert_accessible(page)
        page.wait_for_function(
            "() => window.reelVideo.state === 'processing' && window.reelVideo.preview_url"
            " && document.getElementById('video').currentTime > 0", timeout=180_000)
        expect(page.locator("#processing")).to_be_visible()
        screenshot(page, "desktop-processing-preview", full_page=False)
        page.wait_for_function("() => window.reelVideo.state === 'ready'", timeout=180_000)
        expect(page.locator("#status")).to_be_hidden()
        page.wait_for_function("() => window.hls && window.hls.url && window.hls.url.includes('/steer/')")
        page.wait_for_function("() => document.getElementById('video').currentTime > 1", timeout=60_000)
        console.assert_clean()
