"""Every page at a desktop and a phone width: no serious or critical axe-core violation, no
console error, nothing wider than the screen; a screenshot of each to look at."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser

from tests.e2e.conftest import Demo
from tests.web.browser import VIEWPORTS, assert_accessible, context, screenshot, sign_in_as
from tests.web.conftest import api, new_account


def _pages(demo: Demo) -> dict[str, str]:
    _, video = api(demo.control, "GET", f"/api/v1/videos/{demo.video_id}")
    return {"home": "/", "shorts": "/shorts", "search": "/search?q=test+pattern",
            "search-empty": "/search?q=nothing+like+this&duration=long&uploaded=week",
            "watch": f"/watch/{demo.video_id}", "channel": f"/channel/{video['owner_id']}",
            "signin": "/signin", "signup": "/signup", "upload": "/upload", "studio": "/studio",
            "live": "/live",
            "not-found": "/watch/nosuchvideo"}


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("signed_in", [False, True], ids=["visitor", "signed-in"])
def test_every_page_is_accessible_and_clean(demo: Demo, catalog: list[str], browser: Browser,
                                            viewport: str, signed_in: bool) -> None:
    with context(browser, viewport) as (ctx, console):
        page = ctx.new_page()
        if signed_in:
            sign_in_as(page, demo.control, new_account(demo.control, "Page Checker"))
        for name, path in _pages(demo).items():
            response = page.goto(demo.control + path)
            assert response is not None and response.status == (404 if name == "not-found" else 200)
            page.wait_for_load_state("networkidle")
            assert_accessible(page)
            width = page.evaluate("() => document.documentElement.scrollWidth")
            assert width <= VIEWPORTS[viewport]["width"], f"{name} is {width}px wide"
            screenshot(page, f"{viewport}-{'in' if signed_in else 'out'}-{name}",
                       full_page=name != "shorts")
        console.assert_clean(r"/watch/nosuchvideo.*404")


def test_home_paints_within_a_second(demo: Demo, catalog: list[str], browser: Browser) -> None:
    with context(browser, "phone") as (ctx, console):
        page = ctx.new_page()
        page.goto(demo.control + "/")
        fcp = page.evaluate("""() => new Promise(done => new PerformanceObserver((list, obs) => {
            done(list.getEntriesByName('first-contentful-paint')[0].startTime);
        }).observe({type: 'paint', buffered: true}))""")
        assert fcp < 1000, f"first contentful paint after {fcp:.0f} ms"
        console.assert_clean()


def test_search_filters_and_empty_state(demo: Demo, browser: Browser) -> None:
    with context(browser) as (ctx, console):
        page = ctx.new_page()
        page.goto(demo.control + "/")
        page.get_by_role("searchbox", name="Search videos").fill("test pattern")
        page.keyboard.press("Enter")
        page.wait_for_url("**/search?q=test+pattern")
        assert page.locator(f".results a[href='/watch/{demo.video_id}']").count() >= 1
        page.get_by_label("Duration").select_option("long")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url("**duration=long**")
        assert page.locator(".results .card").count() == 0
        assert "No videos match" in page.locator("#no-results").inner_text()
        assert "removing a filter" in page.locator("#no-results").inner_text()
        console.assert_clean()
