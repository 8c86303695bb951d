"""hls.js in headless Chromium plays the awkward cases with no error and a forced level switch."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page

from packager import package
from packager.testclip import make_test_clip
from tests.packager.test_inputs import ffmpeg, lavfi_audio, lavfi_video
from tests.player import HLSJS, PAGE, play_with_switch


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """A real `reel origin` over a store the tests package into."""
    store = tmp_path_factory.mktemp("store")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "reel", "origin", "--store", str(store),
                             "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1)
            break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.1)
    yield url, store
    proc.terminate()
    proc.wait(10)


def _play(page: Page, master_url: str, until: float = 8.0) -> dict:
    # The page is served (intercepted) from the origin's own host: Chromium refuses a public
    # page's requests into loopback (Private Network Access).
    player = master_url.split("/vod/")[0] + "/_player/"
    page.route(lambda url: url.startswith(player), lambda route: route.fulfill(
        body=HLSJS.read_bytes() if route.request.url.endswith(".js") else PAGE,
        content_type="text/javascript" if route.request.url.endswith(".js") else "text/html"))
    page.goto(f"{player}?src={master_url}")
    return play_with_switch(page, until=until, min_levels=2)


def _assert_played_cleanly(seen: dict) -> None:
    # A stall is the machine starving the player (CPU, network), not a defect of the media; every
    # other error, fatal or not (a hole, a fragment that cannot be parsed), is one.
    assert [e for e in seen["errors"] if e["details"] != "bufferStalledError"] == []
    assert seen["media_error"] is None
    assert len(seen["played"]) >= 2
    assert seen["advanced"] > 0
    assert seen["buffered_start"] < 0.05
    assert len(seen["buffered"]) == 1, seen["buffered"]  # no hole anywhere


def test_portrait_phone_video(origin: tuple[str, Path], page: Page, tmp_path: Path) -> None:
    url, store = origin
    clip = make_test_clip(tmp_path / "p.mp4", seconds=10, width=640, height=360, rotation=90)
    package(clip, store / "vod" / "portrait1")
    _assert_played_cleanly(_play(page, f"{url}/vod/portrait1/master.m3u8"))
    assert page.evaluate("() => document.querySelector('video').videoHeight") > \
        page.evaluate("() => document.querySelector('video').videoWidth")


def test_video_without_audio(origin: tuple[str, Path], page: Page, tmp_path: Path) -> None:
    url, store = origin
    clip = make_test_clip(tmp_path / "n.mp4", seconds=10, width=480, height=270, audio=False)
    package(clip, store / "vod" / "noaudio1")
    _assert_played_cleanly(_play(page, f"{url}/vod/noaudio1/master.m3u8"))


def test_variable_frame_rate(origin: tuple[str, Path], page: Page, tmp_path: Path) -> None:
    url, store = origin
    clip = tmp_path / "vfr.mp4"
    ffmpeg(*lavfi_video("480x270", "30", 10), *lavfi_audio(10), "-vf",
           "select='not(between(n\\,40\\,44)+between(n\\,200\\,203)+eq(mod(n\\,7)\\,3))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", str(clip))
    package(clip, store / "vod" / "vfrclip1")
    _assert_played_cleanly(_play(page, f"{url}/vod/vfrclip1/master.m3u8"))


def test_hevc_10_bit_at_23_976_exactly_two_segments_long(origin: tuple[str, Path], page: Page,
                                                          tmp_path: Path) -> None:
    """Played to its last second: audio and video start together at zero, no tail segment."""
    url, store = origin
    clip = tmp_path / "hevc.mp4"
    ffmpeg(*lavfi_video("640x360", "24000/1001", 12.012), *lavfi_audio(12.012), "-c:v", "libx265",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=none",
           "-c:a", "aac", str(clip))
    package(clip, store / "vod" / "hevc10bit")
    seen = _play(page, f"{url}/vod/hevc10bit/master.m3u8", until=11.5)
    _assert_played_cleanly(seen)
    assert seen["buffered"][0][1] == pytest.approx(12.012, abs=0.05)
