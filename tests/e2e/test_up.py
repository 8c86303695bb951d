"""`reel up`: Ctrl-C stops every process; a second run reuses the data directory; published
objects are world-readable; generated secrets are never read as options; a service killed during
playback is started again while the others serve on."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Page, Route
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import UpProcess
from tests.player import player_page


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_everything_and_a_second_run_reuses_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = []
    for _ in range(2):
        up = UpProcess.start(data, "--demo", "--demo-seconds", "4")
        ids.append(up.wait_for(r"demo video (\S+) is ready").group(1))
        up.wait_for(r"Ctrl-C stops everything")
        ports = [up.port_base + offset for offset in (0, 1, 2, 3, 10, 11)]
        assert all(_listening(port) for port in ports)
        assert up.interrupt() == 0
        assert not any(_listening(port) for port in ports)
        assert not any("Traceback" in line for line in up.lines), "\n".join(up.lines)
    assert ids[0] != ids[1]
    # The first run's video is still there: same database, same objects.
    assert (data / "objects" / "vod" / ids[0] / "master.m3u8").exists()
    assert (data / "objects" / "vod" / ids[1] / "master.m3u8").exists()
    _assert_published_world_readable(data, ids[0])


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _assert_published_world_readable(data: Path, video_id: str) -> None:
    """What the worker published, another user (nginx, a backup job) can read; the upload and
    the store's staging stay private."""
    objects = data / "objects"
    tree = objects / "vod" / video_id
    files = [p for p in tree.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert {p.relative_to(tree).as_posix(): _mode(p) for p in files} == {
        p.relative_to(tree).as_posix(): 0o644 for p in files}
    dirs = [objects, objects / "vod", tree, *(p for p in tree.rglob("*") if p.is_dir())]
    assert {str(p): _mode(p) for p in dirs} == {str(p): 0o755 for p in dirs}
    assert _mode(objects / "sources" / video_id / "source") == 0o600
    assert _mode(objects / "sources") == _mode(objects / ".tmp") == 0o700
    assert _mode(data / "control" / "uploads") == 0o700


# `reel up`, with every generated secret beginning with `-` (as one in 64 does).
DASHED = "-reel-dashed-secret"
DASHED_UP = ("-c", f"import secrets, sys; secrets.token_urlsafe = lambda n=None: {DASHED!r}; "
                   "from reel.cli import main; main(sys.argv[1:])")


def test_a_generated_secret_beginning_with_a_dash_is_never_read_as_an_option(tmp_path: Path) -> None:
    up = UpProcess.start(tmp_path / "data", python=DASHED_UP)
    try:
        up.wait_for(r"Ctrl-C stops everything")
        # Each edge got the secret itself as its purge token.
        for edge in (up.url(10), up.url(11)):
            request = urllib.request.Request(
                edge + "/purge", data=json.dumps({"paths": ["/vod/abcdef/master.m3u8"]}).encode(),
                headers={"Authorization": f"Bearer {DASHED}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
    finally:
        assert up.interrupt() == 0, "\n".join(up.lines)


# `reel up`'s geo: probes every 2 s; 2 failures take an edge out, 2 passes bring it back.
PROBE_INTERVAL, FALL, RISE = 2.0, 2, 2
# From the kill until geo lists the edge again: the supervisor's first delay (1 s), the edge's
# start-up (bounded by 10 s on a busy machine), then geo's hysteresis.
BACK_WITHIN = 1.0 + 10.0 + (FALL + RISE) * PROBE_INTERVAL
# A short buffer, so hls.js keeps fetching segments after the kill.
PLAYER_CONFIG = {"maxBufferLength": 4, "maxMaxBufferLength": 6, "backBufferLength": 10}


def _service_pid(up: UpProcess, *words: str) -> int:
    """The pid of the service `reel up` runs whose arguments include every one of `words`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            argv = (stat.parent / "cmdline").read_bytes().decode().split("\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == up.proc.pid and all(word in argv for word in words):
            return int(stat.parent.name)
    raise AssertionError(f"no service of `reel up` runs with {words}")


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read()


def _geo_says_healthy(geo: str, edge: str) -> bool:
    for family in text_string_to_metric_families(_get(geo + "/metrics").decode()):
        for sample in family.samples:
            if sample.name == "reel_geo_edge_healthy" and sample.labels["edge"] == edge:
                return sample.value == 1
    return False


def _listed_again(up: UpProcess, geo: str, edge: str, killed: int) -> bool:
    """A new eu-west edge process answers, and geo counts it healthy."""
    try:
        _get(edge + "/healthz")  # a 200, or an error
        return _service_pid(up, "edge", "--region=eu-west") != killed and _geo_says_healthy(geo, edge)
    except (AssertionError, OSError):  # no such process yet; not answering yet
        return False


def test_a_killed_edge_is_started_again_while_hlsjs_plays_on(tmp_path: Path, page: Page) -> None:
    """hls.js plays the demo's steered master from the eu-west edge; 6 s in, that edge is killed
    (SIGKILL) as hls.js asks it for a segment. Playback reaches the end, served by the
    ap-southeast edge, and `reel up` has the killed edge back, healthy in geo, within geo's
    hysteresis window, while every other service ran on."""
    up = UpProcess.start(tmp_path / "data", "--demo")
    try:
        video_id = up.wait_for(r"demo video (\S+) is ready").group(1)
        master = up.wait_for(r"playback\s+(\S+)").group(1)
        geo, edge_eu, edge_ap = up.url(0), up.url(10), up.url(11)
        others = {name: _service_pid(up, name, *more) for name, *more in
                  [("geo",), ("control",), ("worker",), ("edge", "--region=ap-southeast")]}
        media: list[str] = []  # media segments hls.js got, in order
        page.on("response", lambda r: media.append(r.url)
                if r.status == 200 and r.url.endswith(".m4s") else None)

        def until(check: Callable[[], object], what: str, timeout: float) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < deadline, f"not reached in {timeout:.0f} s: {what}"
                page.wait_for_timeout(100)  # Playwright records responses meanwhile

        def video(expression: str) -> object:
            return page.evaluate(f"() => document.querySelector('video').{expression}")

        with player_page() as player:
            page.goto(f"{player}?src={quote(master)}&config={quote(json.dumps(PLAYER_CONFIG))}")
            page.wait_for_function("() => window.hls && window.hls.levels.length >= 2", timeout=30_000)
            video("play()")
            until(lambda: video("currentTime") >= 6, "6 s played", timeout=60)
            assert media and all(url.startswith(edge_eu) for url in media)  # the default region's
            # The edge dies as hls.js asks it for its next segment: that request is held until
            # the edge is gone, then meets its closed port (not the edge `reel up` starts again).
            held: list[Route] = []
            victim: int | None = None
            page.route(f"{edge_eu}/**/*.m4s",
                       lambda route: held.append(route) if victim is None else route.continue_())
            until(lambda: held, "hls.js asks the eu-west edge for a segment", timeout=30)
            victim = _service_pid(up, "edge", "--region=eu-west")
            os.killpg(victim, signal.SIGKILL)  # the edge and any workers it forked
            killed_at = time.monotonic()
            until(lambda: not _listening(up.port_base + 10), "the edge's port is closed", timeout=10)
            seen = len(media)
            for route in held:
                route.continue_()
            back_after: float | None = None  # seconds from the kill until the edge was listed again

            def ended() -> bool:
                nonlocal back_after
                if back_after is None and _listed_again(up, geo, edge_eu, victim):
                    back_after = time.monotonic() - killed_at
                return bool(video("ended"))

            until(ended, "playback reaches the end", timeout=120)
            fatal = [e for e in page.evaluate("() => window.hlsErrors") if e["fatal"]]
            assert not fatal
            assert video("error") is None
            assert len(media[seen:]) >= 2 and all(url.startswith(edge_ap) for url in media[seen:])

        up.wait_for(r"edge-eu-west exited \(killed by SIGKILL\)", timeout=10)
        up.wait_for(r"edge-eu-west started again", timeout=30)
        while back_after is None and time.monotonic() < killed_at + BACK_WITHIN:
            if _listed_again(up, geo, edge_eu, victim):
                back_after = time.monotonic() - killed_at
            time.sleep(0.2)
        assert back_after is not None and back_after <= BACK_WITHIN, "geo does not list the edge again"
        steering = json.loads(_get(f"{geo}/steer/vod/{video_id}/steering.json?p=eu-west,ap-southeast"))
        assert steering["PATHWAY-PRIORITY"][0] == "eu-west"  # new sessions go there again
        assert {name: _service_pid(up, name, *more) for name, *more in
                [("geo",), ("control",), ("worker",), ("edge", "--region=ap-southeast")]} == others
    finally:
        assert up.interrupt() == 0, "\n".join(up.lines)
