"""The viewer's journey: search, watch (a view counted after real playback), like, review,
comment, reply, follow, then the followed creator's video in the home feed. Desktop and phone."""

from __future__ import annotations

import secrets

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Demo
from tests.web.browser import VIEWPORTS, assert_accessible, context, screenshot, sign_in_as
from tests.web.conftest import api, new_account


def _search_and_open(page: Page, base: str, video_id: str) -> None:
    page.goto(base + "/")
    page.get_by_role("searchbox", name="Search videos").fill("test pattern")
    page.keyboard.press("Enter")
    page.locator(f".results a.title[href='/watch/{video_id}']").click()
    page.wait_for_url(f"{base}/watch/{video_id}")


def _play_and_count_a_view(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('video').currentTime > 1", timeout=60_000)
    assert page.locator("#quality option").count() >= 2  # Auto and at least one rendition
    page.wait_for_function("() => window.reelPlayer.storyboardCues > 0", timeout=20_000)
    page.locator("#seek").hover(position={"x": 40, "y": 5})
    expect(page.locator("#storyboard")).to_be_visible()  # a storyboard sprite over the seek bar
    page.mouse.move(0, 0)
    page.locator("#title").click()  # focus on the page, not in a control
    page.keyboard.press("k")  # pause, then play again: the shortcuts work
    page.wait_for_function("() => document.getElementById('video').paused")
    page.keyboard.press("k")
    page.wait_for_function("() => window.reelPlayer.views !== null", timeout=30_000)
    assert not [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]


def _like_review_comment_reply(page: Page) -> None:
    likes = int(page.locator("#likes").inner_text())
    page.get_by_role("button", name="Like").first.click()
    expect(page.locator("#like")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#likes")).to_have_text(str(likes + 1))
    page.get_by_label("Your rating").select_option("4")
    page.get_by_label("Your review").fill("Crisp colour bars, would watch again.")
    page.get_by_role("button", name="Post review").click()
    expect(page.locator("#review-list")).to_contain_text("Crisp colour bars")
    first = f"First! ({secrets.token_hex(3)})"  # each run's own: the demo's video is shared
    page.get_by_label("Add a comment").fill(first)
    page.get_by_role("button", name="Comment", exact=True).click()
    comment = page.locator("#comment-list > .comment").filter(has_text=first).first
    expect(comment).to_be_visible()
    comment.get_by_role("button", name="Reply", exact=True).click()
    comment.get_by_role("textbox").fill("Replying to myself")
    comment.get_by_role("button", name="Reply").last.click()
    expect(comment.locator("> .replies")).to_contain_text("Replying to myself")
    expect(comment.locator(".show-replies")).to_contain_text("1 reply")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_viewer_journey(demo: Demo, browser: Browser, viewport: str) -> None:
    base = demo.control
    with context(browser, viewport) as (ctx, console):
        page = ctx.new_page()
        sign_in_as(page, base, new_account(base, f"Viewer {viewport}"))
        _search_and_open(page, base, demo.video_id)
        _play_and_count_a_view(page)
        _like_review_comment_reply(page)
        follow = page.locator("button.follow")
        follow.click()
        expect(follow).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#followers")).to_contain_text("follower")
        assert_accessible(page)
        screenshot(page, f"{viewport}-journey-viewer-watch")
        page.goto(base + "/")
        expect(page.locator(f"#feed-list a[href='/watch/{demo.video_id}']").first).to_be_visible()
        screenshot(page, f"{viewport}-journey-viewer-home")
        _, owner = api(base, "GET", f"/api/v1/videos/{demo.video_id}")
        page.goto(f"{base}/channel/{owner['owner_id']}")
        expect(page.locator("button.follow")).to_have_text("Following")
        console.assert_clean()
