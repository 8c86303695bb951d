"""The DVR window a stream was created with is what its playlists slide by: with 20 s, the
oldest listed segment stays within 20 s of the newest, delta updates (`_HLS_skip`) list only
the last few segments, and hls.js in Chromium seeks 15 s back (into segments memory no longer
holds, served from the store) and plays from there."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import replace

import m3u8
import pytest
from playwright.sync_api import Page

from tests.live.publishers import BOUND
from tests.live.rig import TEST_CONFIG, LiveRig, publication, running
from tests.player import player_page, start_playing

WINDOW = 20.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRig]:
    root = tmp_path_factory.mktemp("live-dvr")
    yield from running(publication(70, root / "clip.mp4"), root, video_id="dvr00001",
                       config=replace(TEST_CONFIG, dvr_seconds=WINDOW))


def newest(rig: LiveRig) -> int:
    status, _, body = rig.get("v240/index.m3u8")
    found = re.findall(r"seg_(\d+)\.m4s", body.decode()) if status == 200 else []
    return int(found[-1]) if found else -1


def test_the_playlist_slides_by_the_streams_window(rig: LiveRig) -> None:
    deadline = time.monotonic() + 2 * BOUND
    while newest(rig) < WINDOW + 8:
        assert time.monotonic() < deadline, "the stream never ran past its window"
        time.sleep(0.5)
    full = rig.get("v240/index.m3u8")[2].decode()
    playlist = m3u8.loads(full)
    segments = [s for s in playlist.segments if s.uri]  # not the one being written
    assert WINDOW - 1 <= sum(s.duration for s in segments) <= WINDOW
    assert playlist.media_sequence > 0  # the oldest went
    span = segments[-1].program_date_time - segments[0].program_date_time
    assert span.total_seconds() < WINDOW
    delta = rig.get("v240/index.m3u8?_HLS_skip=YES")[2].decode()
    skipped = int(re.search(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)", delta)[1])
    assert delta.count("#EXTINF") + skipped == len(segments)
    # Six target durations of segments, however long the window: a reload stays small.
    assert delta.count("#EXTINF") <= 8 and len(delta) < len(full)


def test_hlsjs_seeks_back_into_the_window_and_plays(rig: LiveRig, page: Page) -> None:
    config = {"lowLatencyMode": True}
    with player_page() as url:
        start_playing(page, url, rig.url + '/master.m3u8', config, levels=1)
        page.wait_for_function("() => document.querySelector('video').currentTime > 16",
                               timeout=BOUND * 1000)
        target = page.evaluate("""() => { const v = document.querySelector('video');
            const back = window.hls.liveSyncPosition - 15; v.currentTime = back; return back; }""")
        page.wait_for_function(f"() => document.querySelector('video').currentTime > {target + 2}",
                               timeout=BOUND * 1000)
        seen = page.evaluate("""() => ({errors: window.hlsErrors,
            error: document.querySelector('video').error,
            now: document.querySelector('video').currentTime,
            edge: window.hls.liveSyncPosition})""")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["error"] is None
    assert seen["edge"] - seen["now"] > 8  # played from back in the window, not the live edge
