"""Progress a person can see: reports rise steadily to the end, single pass and parallel alike."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from packager import package
from packager.progress import Report
from packager.testclip import make_test_clip


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_rises_steadily_to_done(tmp_path: Path, workers: int) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=26, width=640, height=360)
    reports: list[Report] = []
    package(clip, tmp_path / "out", progress=reports.append, workers=workers, chunk_seconds=6)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len({round(f, 2) for f in fractions if f < 1}) >= 5, fractions  # many steps, not a few jumps
    stages = [r.stage for r in reports]
    assert stages[-1] == "done" and stages.index("finishing") < stages.index("done")
    assert all(r.total == pytest.approx(26, abs=0.1) for r in reports)


def _reel_package(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reel", "package", *args], timeout=300, **kw)


def test_json_progress_for_scripts(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=13, width=320, height=180)
    run = _reel_package(str(clip), str(tmp_path / "out"), "--progress", "json",
                        capture_output=True, text=True, check=True)
    *lines, result = run.stdout.splitlines()
    assert result == str(tmp_path / "out" / "master.m3u8")
    reports = [json.loads(line) for line in lines]
    percents = [r["percent"] for r in reports]
    assert percents == sorted(percents) and percents[0] < 50 and percents[-1] == 100
    assert len(set(percents)) >= 4
    assert all(r["total"] == pytest.approx(13, abs=0.1) for r in reports)
    assert all(r["eta"] is None or r["eta"] >= 0 for r in reports)
    assert reports[-1]["stage"] == "done" and reports[-1]["eta"] == 0
    assert reports[-1]["speed"] > 0 and reports[-1]["elapsed"] > 0
    assert run.stderr == ""  # nothing but JSON on stdout, nothing drawn


def _on_a_terminal(*args: str) -> str:
    """What `reel package` writes to a pseudo-terminal, ANSI sequences and all."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    with subprocess.Popen([sys.executable, "-m", "reel", "package", *args], stdin=follower,
                          stdout=follower, stderr=follower, env=env) as proc:
        os.close(follower)
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while data := os.read(leader, 65536):
                chunks.append(data)
        proc.wait(300)
    os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def _visible_lines(output: str) -> list[str]:
    """The screen's lines once `output` has been drawn: a small terminal that knows carriage
    return, newline, cursor up and erase line (what a bar redraws itself with)."""
    screen, row, col = [""], 0, 0
    for token in re.findall(r"\x1b\[[0-9;?]*[A-Za-z]|\r|\n|[^\x1b\r\n]+", output):
        if token == "\r":
            col = 0
        elif token == "\n":
            row, col = row + 1, 0
            screen += [""] * (row + 1 - len(screen))
        elif token.endswith("A") and token.startswith("\x1b["):
            row = max(0, row - int(token[2:-1] or 1))
        elif token == "\x1b[2K":
            screen[row] = ""
        elif not token.startswith("\x1b"):
            line = screen[row].ljust(col)
            screen[row], col = line[:col] + token + line[col + len(token):], col + len(token)
    return [line for line in screen if line.strip()]


def test_a_terminal_gets_a_live_bar_that_clears_before_the_result(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=13, width=320, height=180)
    output = _on_a_terminal(str(clip), str(tmp_path / "out"))
    assert "━" in output and "encode" in output and "elapsed" in output and "left" in output
    assert _visible_lines(output)[-1] == str(tmp_path / "out" / "master.m3u8")


def test_a_failure_ends_with_its_reason_on_a_line_of_its_own(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_bytes(b"this is not a video at all\n" * 100)
    output = _on_a_terminal(str(bad), str(tmp_path / "out"))
    assert _visible_lines(output)[-1].startswith("reel package: not_a_video: ")


def test_quiet_prints_only_the_result(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=4, width=320, height=180)
    output = _on_a_terminal(str(clip), str(tmp_path / "out"), "--quiet")
    assert _visible_lines(output) == [str(tmp_path / "out" / "master.m3u8")]
