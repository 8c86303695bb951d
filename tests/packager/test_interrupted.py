"""Playable before finished, and a job killed midway publishes no video; a rerun completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import m3u8

from packager.testclip import make_test_clip
from tests.media import check_hls


def test_event_playlist_while_running_then_kill_then_rerun(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=20, width=640, height=360)
    out = tmp_path / "out"
    job = subprocess.Popen([sys.executable, "-m", "packager", str(clip), str(out)],
                           stdout=subprocess.PIPE, text=True)
    assert job.stdout is not None
    preview = None
    deadline = time.monotonic() + 120
    while preview is None and time.monotonic() < deadline:
        event = json.loads(job.stdout.readline())
        preview = event.get("preview")
    assert preview == "v144/index.m3u8"

    # Playable now: an EVENT playlist with a segment, not ended; no master yet.
    playlist = m3u8.load(str(out / preview))
    assert playlist.playlist_type == "event" and not playlist.is_endlist
    assert playlist.segments and (out / "v144" / playlist.segments[0].uri).exists()
    assert not (out / "master.m3u8").exists()

    job.send_signal(signal.SIGKILL)  # a crash, midway
    job.wait(10)
    assert not (out / "master.m3u8").exists()  # nothing published as a video

    rerun = subprocess.run([sys.executable, "-m", "packager", str(clip), str(out)],
                           capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout.splitlines()[-1])["result"]["segments"] == 4
    check_hls(out, tmp_path, 20.0)
