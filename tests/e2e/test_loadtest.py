"""The Locust viewer suite runs headless against a live stack without failures."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import Demo

LOCUSTFILE = Path(__file__).parents[2] / "loadtest" / "player.py"


def test_player_suite_runs_without_failures(demo: Demo, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "-u", "5",
         "-r", "5", "-t", "6s", "--host", demo.geo, "--video-id", demo.video_id,
         "--csv", str(tmp_path / "run"), "--only-summary"],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    with open(tmp_path / "run_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["segment"]["Request Count"]) >= 5
    assert int(rows["master.m3u8"]["Request Count"]) >= 5
