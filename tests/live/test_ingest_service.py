"""`reel ingest` end to end: ffmpeg publishes over RTMP; the Ingest service admits by stream key
(a fake admitter here: control's live API is another branch), packages LL-HLS, and the stream
is watched through real `reel origin --live` and `reel edge` processes: blocking reloads held
until their part exists, identical ones from many viewers one upstream request, hls.js playing
with lowLatencyMode through the edge. The VOD appears in the store when the publisher stops."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Page

from tests.live.publishers import BOUND, free_port
from tests.player import player_page, start_playing

VIDEO = "ingest0001"
KEY = "sekrit-key"
ROOT = Path(__file__).parents[2]


def get(url: str, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def until_ok(url: str, within: float = BOUND) -> bytes:
    """The body of `url` once it answers 200 (a bound, not a measure: the stack is starting)."""
    deadline = time.monotonic() + within
    while True:
        try:
            status, _, body = get(url, timeout=5)
            if status == 200:
                return body
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered 200")
        time.sleep(0.2)


def metric(url: str, sample: str) -> float:
    text = get(url + "/metrics")[2].decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(sample + " "))


@dataclass
class Stack:
    ingest: str
    origin: str
    edge: str
    store: Path
    publisher: subprocess.Popen

    def live(self, base: str) -> str:
        return f"{base}/live/{VIDEO}"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ingest-service")
    store = root / "store"
    rtmp, http, origin, edge = (free_port() for _ in range(4))
    commands = {
        "ingest": ["ingest", f"--store={store}", f"--static-key={KEY}={VIDEO}", f"--rtmp-port={rtmp}",
                   f"--http-port={http}", "--preset=ultrafast"],
        "origin": ["origin", f"--store={store}", f"--port={origin}", f"--live=http://127.0.0.1:{http}"],
        "edge": ["edge", "--region=eu", f"--origin=http://127.0.0.1:{origin}", f"--port={edge}",
                 "--workers=1", "--cache-mb=32",
                 "--live-prefetch=0"],  # coalescing alone is counted here (prefetch: tests/edge)
    }
    procs = []
    for name, args in commands.items():
        log = open(root / f"{name}.log", "wb")  # noqa: SIM115 - the process owns it
        procs.append(subprocess.Popen([sys.executable, "-m", "reel", *args], cwd=ROOT, stdout=log,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL))
    urls = [f"http://127.0.0.1:{port}" for port in (http, origin, edge)]
    publisher = None
    try:
        for url in urls:
            until_ok(url + "/healthz")
        publisher = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re",
             "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "240",
             "-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "30",
             "-c:a", "aac", "-ac", "2", "-f", "flv", f"rtmp://127.0.0.1:{rtmp}/live/{KEY}"],
            stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield Stack(*urls, store=store, publisher=publisher)
    finally:
        for proc in [publisher, *procs]:
            if proc is not None and proc.poll() is None:
                proc.terminate()
        for proc in [publisher, *procs]:
            if proc is not None:
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()


def next_part(playlist: str) -> tuple[int, int]:
    """The (msn, part) of the preload-hinted part: the next one the stream makes."""
    hint = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_(\d+)_(\d+)\.m4s"', playlist)
    assert hint, playlist
    return int(hint[1]), int(hint[2])


def test_live_playlists_appear_through_the_ingest_origin_and_edge(stack: Stack) -> None:
    for base in (stack.ingest, stack.origin, stack.edge):
        master = until_ok(stack.live(base) + "/master.m3u8").decode()
        assert "v240/index.m3u8" in master and "v144/index.m3u8" in master
    status, headers, body = get(stack.live(stack.edge) + "/v240/index.m3u8")
    assert status == 200 and b"#EXT-X-PART:" in body and b"CAN-BLOCK-RELOAD=YES" in body
    assert headers["X-Cache"] in ("MISS", "COALESCED", "HIT") and "Age" in headers


def test_a_blocking_reload_through_the_edge_returns_once_its_part_exists(stack: Stack) -> None:
    playlist = stack.live(stack.edge) + "/v240/index.m3u8"
    until_ok(stack.live(stack.edge) + "/master.m3u8")
    msn, part = next_part(get(playlist)[2].decode())
    status, headers, body = get(f"{playlist}?_HLS_msn={msn}&_HLS_part={part}")
    assert status == 200, body
    assert f'URI="part_{msn:05d}_{part}.m4s"'.encode() in body  # listed: it exists now
    assert headers["X-Cache"] in ("MISS", "COALESCED")
    status, headers, again = get(f"{playlist}?_HLS_part={part}&_HLS_msn={msn}")  # another spelling
    assert status == 200 and headers["X-Cache"] == "HIT" and again == body


def test_identical_blocking_reloads_from_many_viewers_are_one_upstream_request(stack: Stack) -> None:
    playlist = stack.live(stack.edge) + "/v144/index.m3u8"
    until_ok(stack.live(stack.edge) + "/master.m3u8")
    msn, part = next_part(get(playlist)[2].decode())
    msn, part = (msn, part + 1) if part + 1 < 3 else (msn + 1, 0)  # one ahead: all wait on it
    blocking = 'reel_ingest_http_requests_total{kind="blocking"}'
    before = metric(stack.ingest, blocking)
    url = f"{playlist}?_HLS_msn={msn}&_HLS_part={part}"
    with ThreadPoolExecutor(40) as pool:
        answers = list(pool.map(lambda _: get(url), range(40)))
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    verdicts = [headers["X-Cache"] for _, headers, _ in answers]
    assert verdicts.count("MISS") == 1, verdicts
    assert metric(stack.ingest, blocking) - before == 1


def test_hlsjs_plays_low_latency_through_the_edge(stack: Stack, page: Page) -> None:
    master = until_ok(stack.live(stack.edge) + "/master.m3u8") and stack.live(stack.edge) + "/master.m3u8"
    config = {"lowLatencyMode": True}
    with player_page() as url:
        start_playing(page, url, master, config, levels=2, timeout=45_000)
        page.wait_for_function("() => document.querySelector('video').currentTime > 4", timeout=60_000)
        seen = page.evaluate("""() => {
            const d = window.hls.levels[window.hls.currentLevel].details;
            return {errors: window.hlsErrors, parts: (d.partList || []).length,
                    can_block: d.canBlockReload, live: d.live};
        }""")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert seen["live"] and seen["can_block"] and seen["parts"] > 0


def test_the_stream_becomes_a_vod_when_the_publisher_stops(stack: Stack) -> None:
    stack.publisher.terminate()  # ffmpeg ends its stream cleanly on SIGTERM
    stack.publisher.wait(BOUND)
    master = stack.store / "vod" / VIDEO / "master.m3u8"
    deadline = time.monotonic() + BOUND
    while not master.exists():
        assert time.monotonic() < deadline, "no VOD master"
        time.sleep(0.2)
    assert (stack.store / "vod" / VIDEO / "v240" / "index.m3u8").read_text().rstrip().endswith(
        "#EXT-X-ENDLIST")
    ended = until_ok(stack.live(stack.origin) + "/v240/index.m3u8")  # the ingest still has it
    assert b"#EXT-X-ENDLIST" in ended
