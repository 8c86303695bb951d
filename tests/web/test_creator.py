"""The creator's journey: sign up, upload a generated clip with tus (reloading mid-upload and
resuming), watch processing finish, play it, edit it, make it private (a signed-out browser is
refused), delete it. At a desktop and a phone width."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from packager.testclip import make_test_clip
from tests.e2e.conftest import Demo
from tests.web.browser import VIEWPORTS, assert_accessible, context, screenshot
from tests.web.conftest import PASSWORD, api

CHUNK = 64 * 1024  # small tus chunks, so a reload lands mid-upload with bytes on the server


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("clip") / "my-first-clip.mp4", seconds=4,
                          width=640, height=360, fps=30)


def _sign_up(page: Page, base: str, name: str) -> None:
    page.goto(base + "/signup")
    page.get_by_label("Email").fill("not-an-email")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.locator("#email-error")).not_to_be_empty()  # the API's error, beside its field
    page.get_by_label("Name").fill(name)
    page.get_by_label("Email").fill(f"{name.lower().replace(' ', '.')}.{id(page)}@example.com")
    page.get_by_role("button", name="Sign up").click()
    page.wait_for_url(base + "/")
    expect(page.get_by_role("link", name="Studio")).to_be_visible()


def _upload_with_a_reload(page: Page, base: str, clip: Path) -> str:
    """Start a throttled upload, reload at a third, choose the file again: it resumes."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 20,
             "downloadThroughput": -1, "uploadThroughput": clip.stat().st_size / 6})
    page.goto(base + "/upload")
    page.set_input_files("#file", str(clip))
    page.get_by_label("Title").fill("My first clip")
    page.get_by_label("Tags").fill("first, clip")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_function("() => document.getElementById('upload-progress').value >= 30")
    assert "MB/s" in page.locator("#upload-stats").inner_text()  # speed and time left
    page.reload()
    expect(page.locator("#resume-note")).to_contain_text("did not finish")
    cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": 0,
             "downloadThroughput": -1, "uploadThroughput": -1})
    page.set_input_files("#file", str(clip))
    expect(page.locator("#resume-note")).to_contain_text("resume where it stopped")
    page.get_by_role("button", name="Upload", exact=True).click()
    page.wait_for_function("() => window.reelUpload.videoId", timeout=60_000)
    resumed = page.evaluate("() => window.reelUpload.resumedFrom")
    assert resumed >= CHUNK and resumed < clip.stat().st_size, resumed
    return page.evaluate("() => window.reelUpload.videoId")


def _edit_and_make_private(page: Page, base: str, video_id: str) -> None:
    page.goto(base + "/studio")
    row = page.locator(f"tr[data-video='{video_id}']")
    expect(row.locator(".state")).to_have_text("ready")
    assert_accessible(page)
    row.get_by_role("button", name="Edit My first clip").click()
    dialog = page.locator("#edit-dialog")
    dialog.get_by_label("Title").evaluate("el => el.removeAttribute('maxlength')")
    dialog.get_by_label("Title").fill("x" * 300)  # too long: the API says so beside the field
    dialog.get_by_role("button", name="Save").click()
    expect(dialog.locator("#edit-title-error")).not_to_be_empty()
    dialog.get_by_label("Title").fill("My edited clip")
    dialog.get_by_label("Privacy").select_option("private")
    assert_accessible(page)
    dialog.get_by_role("button", name="Save").click()
    expect(row.locator("a")).to_have_text("My edited clip")
    expect(row.locator(".privacy")).to_have_text("private")


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_creator_journey(demo: Demo, browser: Browser, clip: Path, viewport: str) -> None:
    base = demo.control
    with context(browser, viewport) as (ctx, console):
        ctx.add_init_script(f"window.reelUploadChunkSize = {CHUNK};")
        page = ctx.new_page()
        _sign_up(page, base, f"Creator {viewport}")
        video_id = _upload_with_a_reload(page, base, clip)
        expect(page.locator("#processing-stats")).to_have_text("Ready to watch.", timeout=240_000)
        screenshot(page, f"{viewport}-journey-uploaded")
        page.get_by_role("link", name="Open the watch page").click()
        page.wait_for_function("() => document.getElementById('video').currentTime > 1",
                               timeout=60_000)
        expect(page.locator("#title")).to_have_text("My first clip")
        screenshot(page, f"{viewport}-journey-watch", full_page=False)
        _edit_and_make_private(page, base, video_id)
        screenshot(page, f"{viewport}-journey-studio")
        with context(browser, viewport) as (stranger, stranger_console):
            response = stranger.new_page().goto(f"{base}/watch/{video_id}")
            assert response is not None and response.status == 404
            assert api(base, "GET", f"/api/v1/videos/{video_id}")[0] == 404
        page.locator(f"tr[data-video='{video_id}']").get_by_role("button", name="Delete").click()
        expect(page.locator("#delete-dialog")).to_be_visible()
        assert_accessible(page)
        page.locator("#delete-confirm").click()
        expect(page.locator(f"tr[data-video='{video_id}']")).to_have_count(0)
        expect(page.locator("#studio-empty")).to_be_visible()
        assert api(base, "GET", f"/api/v1/videos/{video_id}")[0] == 404
        console.assert_clean(r"status of 400")  # the refused long title
