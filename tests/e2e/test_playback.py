"""A viewer opens the watch page: hls.js in headless Chromium plays through geo → edge → origin."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.e2e.conftest import Demo

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def _current_time(page: Page) -> float:
    return page.evaluate("() => document.querySelector('video').currentTime")


def test_hlsjs_plays_two_renditions_without_any_error(demo: Demo, page: Page) -> None:
    responses: list[tuple[str, int, str | None]] = []
    page.on("response", lambda r: responses.append((r.url, r.status, r.headers.get("x-cache"))))

    page.goto(demo.watch_url)
    page.wait_for_function("() => window.hls && window.hls.levels.length >= 3", timeout=30_000)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 1.5",
                           timeout=30_000)
    before_switch = _current_time(page)

    # Force a switch to a rendition that is not playing now; hls.js must play on through it.
    page.evaluate("""() => {
        const now = window.hls.currentLevel;
        window.hls.currentLevel = now === 0 ? window.hls.levels.length - 1 : 0;
    }""")
    page.wait_for_function(
        "() => new Set(window.playedLevels).size >= 2"
        " && document.querySelector('video').currentTime > 8",
        timeout=60_000,
    )
    assert _current_time(page) > before_switch  # the playback clock advanced
    assert page.evaluate("() => window.hlsErrors") == []
    assert page.evaluate("() => document.querySelector('video').error") is None

    # The path: geo redirected the master playlist to the default region's edge, and every
    # media request was answered by that edge with X-Cache.
    master = demo.playback_url
    assert (master, 302, None) in [(u, s, None) for u, s, _ in responses if u == master]
    edge = demo.edges[0]
    media = [(u, s, c) for u, s, c in responses if u.endswith((".m4s", ".mp4"))]
    assert media and all(u.startswith(edge) and s == 200 and c for u, s, c in media)
    played = page.evaluate("() => [...new Set(window.playedLevels)]")
    assert len(played) >= 2
