"""A hot video's JSON through the edge, against the same edge's hot playlist and against control
alone, in one run (by hand).

    .venv/bin/python loadtest/bench_api.py [--seconds 5] [--rounds 3] [--workers N]

Needs wrk (Debian: apt-get install wrk). Starts, on loopback ports picked at start and from a
temporary directory: the benchmark origin of bench_edge (loadtest/edge_bench/origin.py), one
`reel control` process (SQLite, rate limits off), and `reel edge --workers N --control ...` in
front of both. Uploads one small video (its JSON is what a viewer reads when a celebrity posts),
then measures with wrk (keep-alive, the same connections and threads for every run):

  1. hot playlist through the edge (requests/s): the edge's hot-object rate, the peer;
  2. the video's JSON through the edge (requests/s), and how many requests control got for it
     meanwhile (its own /metrics), against the bound: one per max-age per edge;
  3. the same JSON straight from control (requests/s): the baseline.

Each figure is the median of `--rounds` rounds, the order rotated each round. Printed with the
ratios the issue asks for (#16: JSON >= 0.5x the playlist, >= 10x control alone).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.bench_edge import PYTHON, Processes, free_port, rotated, wrk  # noqa: E402

SECRET = uuid.uuid4().hex
ROUTE = "/api/v1/videos/{video_id}"


def call(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(url, data=body, headers=headers or {})
    with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback only
        return json.loads(resp.read())


def upload(control: str) -> str:
    """A user and one small video (it need not be packaged: its JSON is served all the same)."""
    account = json.dumps({"email": "bench@example.com", "password": "bench password 1"}).encode()
    call(control + "/api/v1/users", account, {"Content-Type": "application/json"})
    token = call(control + "/api/v1/sessions", account, {"Content-Type": "application/json"})["token"]
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nA celebrity posts\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.mp4\"\r\n"
            f"Content-Type: video/mp4\r\n\r\n").encode()
    form += os.urandom(4096) + f"\r\n--{boundary}--\r\n".encode()
    answer = call(control + "/api/v1/videos", form, {
        "Authorization": f"Bearer {token}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    return answer["video"]["id"]


def control_requests(control: str) -> float:
    """GETs of a video's JSON control has answered, 200 or 304 (its own metrics)."""
    with urllib.request.urlopen(control + "/metrics", timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    total = 0.0
    for line in text.splitlines():
        if (line.startswith("reel_control_request_seconds_count{") and f'route="{ROUTE}"' in line
                and 'method="GET"' in line and ('status="200"' in line or 'status="304"' in line)):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="reel edge --workers")
    parser.add_argument("--max-age", type=int, default=2, help="reel control --api-max-age")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk not found: apt-get install wrk")

    workdir = Path(tempfile.mkdtemp(prefix="reel-bench-api-"))
    procs = Processes(workdir)
    ports = {name: free_port() for name in ("origin", "control", "edge")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        procs.start("origin", [PYTHON, "-m", "loadtest.edge_bench.origin", str(ports["origin"]), "0"])
        procs.start("control", [PYTHON, "-m", "reel", "control", "--data", str(workdir / "control"),
                                "--store", str(workdir / "objects"), "--port", str(ports["control"]),
                                "--worker-token", uuid.uuid4().hex, "--rate-ip", "0", "--rate-user", "0",
                                "--rate-auth", "0", "--edge-secret", SECRET,
                                "--api-max-age", str(args.max_age)])
        procs.start("edge", [PYTHON, "-m", "reel", "edge", "--region", "bench", "--origin", urls["origin"],
                             "--prefetch", "0", "--port", str(ports["edge"]), "--workers", str(args.workers),
                             "--control", urls["control"], "--control-secret", SECRET])
        for name in ("origin", "control", "edge"):
            procs.wait_http(name, urls[name] + "/healthz")
        video_id = upload(urls["control"])
        json_path = f"/api/v1/videos/{video_id}"
        targets = {
            "playlist": urls["edge"] + "/vod/hot/index.m3u8",
            "json": urls["edge"] + json_path,
            "control": urls["control"] + json_path,
        }
        for url in targets.values():
            urllib.request.urlopen(url, timeout=10).read()  # noqa: S310 - warm, and check it answers
        rates: dict[str, list[float]] = {name: [] for name in targets}
        counted: list[tuple[float, float]] = []  # (control requests, seconds) during edge JSON runs
        print(f"wrk -t{args.threads} -c{args.connections} -d{args.seconds}s, {args.rounds} rounds, "
              f"edge --workers {args.workers}, control --api-max-age {args.max_age}", flush=True)
        for round_ in range(args.rounds):
            for name in rotated(tuple(targets), round_):
                before, started = control_requests(urls["control"]), time.monotonic()
                rate, _, bad = wrk(targets[name], args.seconds, args.connections, args.threads)
                if name == "json":
                    counted.append((control_requests(urls["control"]) - before, time.monotonic() - started))
                rates[name].append(rate)
                time.sleep(1.0)  # what wrk left in flight is answered before the next count
                flag = f"  ({bad} non-2xx)" if bad else ""
                print(f"  round {round_ + 1} {name:9} {rate:10.0f} req/s{flag}", flush=True)
        report(rates, counted, args)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(rates: dict[str, list[float]], counted: list[tuple[float, float]],
           args: argparse.Namespace) -> None:
    playlist, hot_json, control = (statistics.median(rates[n]) for n in ("playlist", "json", "control"))
    asked = sum(n for n, _ in counted)
    allowed = sum(math.ceil(seconds / args.max_age) + 1 for _, seconds in counted)
    print()
    print(f"{'hot playlist through the edge, req/s':42}{playlist:10.0f}")
    print(f"{'hot video JSON through the edge, req/s':42}{hot_json:10.0f}   "
          f"{hot_json / playlist:.2f}x the playlist (goal >= 0.5x)")
    print(f"{'the same JSON straight from control, req/s':42}{control:10.0f}   "
          f"edge {hot_json / control:.1f}x control (goal >= 10x)")
    print(f"{'control requests during the edge JSON runs':42}{asked:10.0f}   "
          f"bound {allowed} (one per {args.max_age} s max-age per edge, and one to start)")


if __name__ == "__main__":
    main()
