"""`reel loadtest live` against a real edge (`reel edge`) in front of loadtest's synthetic LL-HLS
origin (three streams: a celebrity and a long tail, each with an audio rendition): the run ends
without failures, its viewers made blocking reloads and fetched parts on video and on audio, as
hls.js does, and used rendition reports, and the report shows what the
issue asks for (latency from PROGRAM-DATE-TIME, upstream requests per part per edge, stalls,
edge CPU per 1,000 viewers) with their plots."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port_base
from tests.e2e.test_loadtest import _env, _run

ROOT = Path(__file__).parents[2]
STREAMS = "celeb0001,tail0001,tail0002"


@pytest.fixture
def edge() -> Iterator[str]:
    base = free_port_base(2)
    origin, edge = f"http://127.0.0.1:{base}", f"http://127.0.0.1:{base + 1}"
    procs = [subprocess.Popen([sys.executable, "-m", "loadtest.liveorigin", "--port", str(base),
                               "--video", STREAMS, "--part-target", "0.5"], env=_env(), cwd=ROOT),
             subprocess.Popen([sys.executable, "-m", "reel", "edge", "--region", "eu", "--origin", origin,
                               "--port", str(base + 1), "--workers", "1"], env=_env(), cwd=ROOT,
                              stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        for url in (origin, edge):
            while True:
                try:
                    urllib.request.urlopen(url + "/healthz", timeout=2).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{url} never came up"
                    time.sleep(0.2)
        yield edge
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(10)


def test_the_live_suite_runs_and_reports_what_a_live_sre_asks(edge: str, tmp_path: Path) -> None:
    _run([sys.executable, "-m", "reel", "loadtest", "live", "--users", "20", "--duration", "15s",
          "--host", edge, "--out", str(tmp_path), "--entry", "redirect", "--live", STREAMS,
          "--watch-seconds", "30", "--link-mbps", "3"], timeout=120)
    with open(tmp_path / "live_stats.csv") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert int(rows["playlist (blocking)"]["Request Count"]) > 20
    assert int(rows["part"]["Request Count"]) > 20
    # Every view followed its audio rendition too, part for part beside the video.
    assert int(rows["live audio playlist"]["Request Count"]) > 0
    assert int(rows["live audio playlist (blocking)"]["Request Count"]) > 20
    audio_parts = int(rows["live audio part"]["Request Count"])
    assert audio_parts > int(rows["part"]["Request Count"]) / 2
    assert all(int(row["Failure Count"]) == 0 for name, row in rows.items() if name.startswith("live audio"))
    summary = json.loads((tmp_path / "live_report.json").read_text())["summary"]
    assert summary["views"] > 0 and summary["views_failed"] == 0
    assert summary["hot_views"] > summary["views"] / 2  # the celebrity has most viewers
    assert 0 < summary["live_latency_p50_ms"] <= summary["live_latency_p99_ms"]
    assert summary["live_parts_served"] > 10
    assert summary["live_audio_parts"] > 10
    # One edge, viewers of the same parts: about one upstream request per part, audio's and
    # video's parts counted alike (prefetch may fetch a part no viewer of this short run asked for).
    assert 0.5 <= summary["live_upstream_per_part"] <= 1.5
    assert summary["edge_cpu_per_1000"] is not None and summary["stalls_per_min"] is not None
    page = (tmp_path / "live_report.html").read_text()
    for title in ("Live latency (PDT vs wall clock)", "Upstream requests per part per edge",
                  "Edge CPU per 1,000 viewers", "Stalls per minute"):
        assert title in page
