"""A viewer opens the watch page: hls.js in headless Chromium plays through geo → edge → origin."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.e2e.conftest import Demo
from tests.player import play_with_switch


def test_hlsjs_plays_two_renditions_without_any_error(demo: Demo, page: Page) -> None:
    responses: list[tuple[str, int, str | None]] = []
    page.on("response", lambda r: responses.append((r.url, r.status, r.headers.get("x-cache"))))

    page.goto(demo.watch_url)
    seen = play_with_switch(page)
    assert seen["advanced"] > 0  # the playback clock advanced
    assert seen["errors"] == []
    assert seen["media_error"] is None
    assert len(seen["played"]) >= 2
    assert seen["buffered_start"] < 0.05  # no hole at the start

    # The path: geo served the steered master (and the steering manifest) and every media
    # request went to the default region's edge (127.0.0.1 is in no GeoIP database), with X-Cache.
    master = demo.playback_url
    assert (master, 200) in [(u, s) for u, s, _ in responses]
    steering = [s for u, s, _ in responses if "/steering.json?" in u]
    assert steering and set(steering) == {200}
    edge = demo.edges[0]
    media = [(u, s, c) for u, s, c in responses if u.endswith((".m4s", ".mp4"))]
    assert media and all(u.startswith(edge) and s == 200 and c for u, s, c in media)
