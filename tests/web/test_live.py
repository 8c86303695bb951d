"""Going live from the browser: a creator makes a stream on /live, sees its ingest URLs and its
key (masked until shown), rotates the key (the old one is refused), publishes with ffmpeg and sees
the preview play; a viewer finds it in home's "Live now" row and watches it (LIVE badge, seeking
back in the DVR window, back to live); the creator ends the stream and sees it become
processing, then a ready recording that plays."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

from playwright.sync_api import Browser, Page, expect

from tests.e2e.conftest import Demo
from tests.web.browser import DESKTOP, PHONE, assert_accessible, context, screenshot, sign_in_as
from tests.web.conftest import new_account

BOUND = 180_000  # ms: a bound on waits on a busy machine, never a measure


@contextmanager
def publishing(url: str) -> Iterator[subprocess.Popen]:
    """ffmpeg publishing a test pattern to `url` in real time, as the issue's recipe does."""
    proc = subprocess.Popen(
        ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
         "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine",
         "-t", "600", "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30",
         "-c:a", "aac", "-f", "flv", url],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(30)


def _create(page: Page, base: str) -> dict[str, str]:
    page.goto(base + "/live")
    assert_accessible(page)
    page.get_by_label("Title").fill("Live from the web")
    page.get_by_label("How far back viewers may seek").select_option("600")
    page.get_by_role("button", name="Create stream").click()
    expect(page.locator("#stream")).to_be_visible()
    expect(page.locator("#stream-state")).to_have_text("Waiting for your encoder")
    key = page.get_by_label("Stream key", exact=True)
    expect(key).to_have_attribute("type", "password")  # masked until shown
    page.get_by_role("button", name="Show").click()
    expect(key).to_have_attribute("type", "text")
    shown = {"key": key.input_value(),
             "server": page.get_by_label("RTMP server", exact=True).input_value(),
             "rtmp": page.get_by_label("RTMP URL (server and key together)").input_value(),
             "srt": page.get_by_label("SRT URL", exact=True).input_value(),
             "video": page.evaluate("() => window.reelLive.videoId")}
    assert shown["key"].startswith("live_") and shown["rtmp"] == f"{shown['server']}/{shown['key']}"
    assert shown["server"].startswith("rtmp://") and shown["srt"].endswith("publish:" + shown["key"])
    return shown


def _watch_live(browser: Browser, base: str, video_id: str) -> None:
    """A viewer on a phone: home's Live now row, the watch page, back in the DVR window, live."""
    with context(browser, "phone") as (ctx, console):
        page = ctx.new_page()
        page.goto(base + "/")
        card = page.locator(f"#live-now .card:has(a[href='/watch/{video_id}'])")
        expect(card.locator(".badge-live")).to_have_text("LIVE")
        expect(card.locator(".viewers")).to_contain_text("watching")
        assert_accessible(page)
        screenshot(page, "phone-home-live-now", full_page=False)
        card.locator("a.title").click()
        expect(page.locator("#live-badge")).to_be_visible()
        page.wait_for_function("() => document.getElementById('video').currentTime > 2", timeout=BOUND)
        expect(page.locator("#golive")).to_be_visible()
        page.wait_for_function("""() => { const s = document.getElementById('video').seekable;
            return s.length && s.end(s.length - 1) - s.start(0) > 14; }""", timeout=BOUND)
        page.locator("#title").click()
        page.keyboard.press("j")  # ten seconds back, inside the DVR window
        page.wait_for_function("() => window.reelPlayer.behindLive > 0")
        expect(page.locator("#golive")).to_have_class("golive behind")
        page.wait_for_function("() => !document.getElementById('video').paused")
        assert_accessible(page)
        screenshot(page, "phone-watch-live-behind", full_page=False)
        page.get_by_role("button", name="Jump to live").click()
        page.wait_for_function("() => window.reelPlayer.behindLive === 0", timeout=30_000)
        assert not [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]
        console.assert_clean()


def _rotate(page: Page, shown: dict[str, str]) -> str:
    page.get_by_role("button", name="Rotate key").click()
    expect(page.locator("#rotate-dialog")).to_be_visible()
    assert_accessible(page)
    page.locator("#rotate-confirm").click()
    page.wait_for_function("() => window.reelLive.rotated", timeout=30_000)
    new_key = page.get_by_label("Stream key", exact=True).input_value()
    assert new_key.startswith("live_") and new_key != shown["key"]
    rtmp = page.get_by_label("RTMP URL (server and key together)").input_value()
    assert rtmp == f"{shown['server']}/{new_key}"
    return rtmp


def test_go_live_rotate_watch_end(demo: Demo, browser: Browser) -> None:
    base = demo.control
    with context(browser) as (ctx, console):
        page = ctx.new_page()
        sign_in_as(page, base, new_account(base, "Live Creator"))
        shown = _create(page, base)
        screenshot(page, "desktop-golive-created")
        rtmp = _rotate(page, shown)
        with publishing(shown["rtmp"]) as old:  # the rotated key: refused
            assert old.wait(BOUND / 1000) != 0
        expect(page.locator("#stream-state")).to_have_text("Waiting for your encoder")
        with publishing(rtmp):
            page.wait_for_function("() => window.reelLive.previewing", timeout=BOUND)
            page.wait_for_function("() => document.getElementById('preview').currentTime > 1",
                                   timeout=BOUND)
            expect(page.locator("#stream-state")).to_have_text("Live")
            expect(page.locator("#stream-badge")).to_be_visible()
            assert_accessible(page)
            screenshot(page, "desktop-golive-live")
            page.set_viewport_size(PHONE)
            assert page.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]
            assert_accessible(page)
            screenshot(page, "phone-golive-live")
            page.set_viewport_size(DESKTOP)
            _watch_live(browser, base, shown["video"])
            page.get_by_role("button", name="End stream").click()
            expect(page.locator("#end-dialog")).to_be_visible()
            assert_accessible(page)
            page.locator("#end-confirm").click()
            expect(page.locator("#stream-state")).to_have_text("Ended: making the recording")
            expect(page.locator("#ingest")).to_be_hidden()  # no key nor URL to use any more
        expect(page.locator("#stream-state")).to_have_text("Ended: the recording is ready",
                                                           timeout=BOUND)
        screenshot(page, "desktop-golive-ended")
        page.get_by_role("link", name="Watch the recording").click()
        page.wait_for_function("() => window.reelVideo.state === 'ready'"
                               " && document.getElementById('video').currentTime > 1", timeout=BOUND)
        console.assert_clean()
