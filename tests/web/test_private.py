"""A private video's owner watches it like any video (its playback token in every media URL, the
storyboard's sprites too), a signed-out browser is refused; and a follow shows as such on a fresh
browser, because the button asks the API."""

from __future__ import annotations

import time

import pytest
import requests
from playwright.sync_api import Browser, expect

from packager.testclip import make_test_clip
from tests.e2e.conftest import Demo
from tests.web.browser import VIEWPORTS, assert_accessible, context, screenshot, sign_in_as
from tests.web.conftest import api, new_account

BOUND = 240.0  # seconds: a bound on waits on a busy machine, never a measure


@pytest.fixture(scope="module")
def private_video(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    """(its owner's session, a ready private video of theirs)."""
    clip = make_test_clip(tmp_path_factory.mktemp("clip") / "secret.mp4", seconds=6,
                          width=640, height=360, fps=30)
    owner = new_account(demo.control, "Secret Keeper")
    with clip.open("rb") as f:
        resp = requests.post(demo.control + "/api/v1/videos", timeout=60,
                             headers={"Authorization": f"Bearer {owner['token']}"},
                             files={"file": ("secret.mp4", f, "video/mp4")},
                             data={"title": "my secret clip", "privacy": "private"})
    assert resp.status_code == 202, resp.text
    video_id = resp.json()["video"]["id"]
    deadline = time.monotonic() + BOUND
    while api(demo.control, "GET", f"/api/v1/videos/{video_id}", token=owner["token"])[1][
            "state"] != "ready":
        assert time.monotonic() < deadline, "the clip was never ready"
        time.sleep(1)
    return owner, video_id


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_the_owner_watches_a_private_video(demo: Demo, browser: Browser, viewport: str,
                                           private_video: tuple[dict, str]) -> None:
    owner, video_id = private_video
    with context(browser, viewport) as (ctx, console):
        page = ctx.new_page()
        sign_in_as(page, demo.control, owner)
        response = page.goto(f"{demo.control}/watch/{video_id}")
        assert response is not None and response.status == 200
        expect(page.locator("#title")).to_have_text("my secret clip")
        expect(page.locator("#meta")).to_contain_text("private")
        page.wait_for_function("() => document.getElementById('video').currentTime > 1",
                               timeout=60_000)
        page.wait_for_function("() => window.reelPlayer.storyboardCues > 0", timeout=20_000)
        sprite = page.evaluate("() => window.reelPlayer.storyboardSrc")
        assert f"/vod/{video_id}/~" in sprite  # the token, kept from the storyboard's URL
        assert page.evaluate("src => fetch(src).then(r => r.status)", sprite) == 200
        page.locator("#seek").hover(position={"x": 40, "y": 5})
        expect(page.locator("#storyboard")).to_be_visible()
        assert page.evaluate("""() => new Promise(done => { const img = new Image();
            img.onload = () => done(img.naturalWidth); img.onerror = () => done(0);
            img.src = window.reelPlayer.storyboardSrc; })""") > 0
        assert_accessible(page)
        screenshot(page, f"{viewport}-watch-private-owner", full_page=False)
        assert not [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]
        console.assert_clean()
    with context(browser, viewport) as (ctx, _):
        response = ctx.new_page().goto(f"{demo.control}/watch/{video_id}")
        assert response is not None and response.status == 404  # signed out: refused


def test_follow_state_comes_from_the_api(demo: Demo, browser: Browser,
                                         private_video: tuple[dict, str]) -> None:
    owner, _ = private_video
    fan = new_account(demo.control, "Loyal Fan")
    status, _ = api(demo.control, "PUT", f"/api/v1/users/{owner['user']['id']}/follow",
                    token=fan["token"])
    assert status == 204
    with context(browser) as (ctx, console):  # a browser that never clicked Follow
        page = ctx.new_page()
        sign_in_as(page, demo.control, fan)
        page.goto(f"{demo.control}/channel/{owner['user']['id']}")
        follow = page.locator("button.follow")
        expect(follow).to_have_text("Following")
        expect(follow).to_have_attribute("aria-pressed", "true")
        expect(page.locator("#followers")).to_have_text("1 follower")
        follow.click()
        expect(follow).to_have_text("Follow")
        expect(page.locator("#followers")).to_have_text("0 followers")
        page.reload()
        expect(page.locator("button.follow")).to_have_attribute("aria-pressed", "false")
        console.assert_clean()
