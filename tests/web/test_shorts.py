"""The short-video feed: three moves (arrow keys on a desktop, scrolls on a phone), each video
starting promptly because the next three were warmed (their first segments already buffered)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import Browser, Page

from tests.e2e.conftest import Demo
from tests.web.browser import VIEWPORTS, assert_accessible, context, screenshot

START_WITHIN = 3.0  # seconds from a swipe to the next video playing


def _move(page: Page, viewport: str) -> None:
    if viewport == "phone":
        box = page.locator("#shorts").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.wheel(0, box["height"])
    else:
        page.keyboard.press("ArrowDown")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_three_swipes_each_start(demo: Demo, catalog: list[str], browser: Browser,
                                 viewport: str) -> None:
    with context(browser, viewport) as (ctx, console):
        page = ctx.new_page()
        page.goto(demo.control + "/shorts")
        page.wait_for_function("() => window.reelShorts.started.includes(0)", timeout=30_000)
        assert_accessible(page)
        for n in range(1, 4):
            page.wait_for_function(f"() => window.reelShorts.warmed.includes({n})", timeout=30_000)
            start = time.monotonic()
            _move(page, viewport)
            page.wait_for_function(f"() => window.reelShorts.started.includes({n})", timeout=15_000)
            assert time.monotonic() - start < START_WITHIN
            assert page.evaluate("() => window.reelShorts.index") == n
            page.wait_for_function(f"""() => Math.abs(document.querySelectorAll('.short')[{n}]
                .getBoundingClientRect().top - document.getElementById('shorts')
                .getBoundingClientRect().top) < 2""")  # snapped: one whole video on screen
            screenshot(page, f"{viewport}-shorts-{n}", full_page=False)
        assert not [e for e in page.evaluate("() => window.reelShorts.errors") if e["fatal"]]
        console.assert_clean()
