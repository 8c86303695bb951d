"""One edge in front of one LL-HLS stream, with thousands of viewers, against the same viewers
sent straight to the origin, in one run (by hand; issue 15):

    .venv/bin/python loadtest/bench_live_edge.py [--viewers 2000] [--seconds 20] [--part-target 0.5]

The origin is loadtest/liveorigin.py (parts made on a clock, blocking reloads, hinted parts
streamed as they grow; no encoder, so the figures are the edge's, not ffmpeg's), with two video
renditions and an audio one (`a128`, the master's AUDIO group). The edge is `reel edge
--workers 1`. Viewers are asyncio clients, many per process (`--client-procs`, at
`--client-nice`; loadtest/llviewers.py), each doing what hls.js does in low-latency mode: the
master, then on one video rendition and on the audio one, each on its own connections, a plain
reload to tune in, then for every part the blocking reload for the next part
(`_HLS_msn`/`_HLS_part`, as hls.js computes them) and the preload-hinted part, both at once.
`--no-audio`: no audio rendition at the origin and video-only viewers (the benchmark as it was).
One probe viewer per video rendition (with its audio) asks the origin directly throughout, in a
process of its own.

Printed, for the edge run and the direct run:
  - upstream requests per part per rendition (the origin's own count, over the parts the stream
    made while viewers watched), video and audio on lines of their own, and per distinct key
    (target: exactly 1 behind the edge);
  - added latency: when a viewer got a blocking reload's answer minus when the probe got the same
    answer straight from the origin, p50/p99 (it includes the client processes' own lag);
  - viewer latency p50/p99: part received minus the part's end by PROGRAM-DATE-TIME;
  - stalls: a viewer starts PART-HOLD-BACK behind live and plays in real time; a part (video or
    audio) arriving after its play time is a stall;
  - failures (non-200 answers, broken connections); edge CPU seconds per second per 1,000 viewers;
the viewer processes' CPU and event-loop lag (a starved load generator shows there) and the
kernel's accept-queue overflows; and the ratios (offload: origin requests direct / behind the edge).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest import llviewers  # noqa: E402
from loadtest.bench_edge import fetch, free_port  # noqa: E402

PYTHON = sys.executable
VIDEO = "celeb0001"
RENDITIONS = ("v720", "v360")
AUDIO = "a128"


class Scraper:
    """Keep-alive connections, opened before the load, for reading /metrics and /stats during
    it: a new connection could wait behind thousands of viewers' in the accept queue."""

    def __init__(self) -> None:
        self._conns: dict[str, http.client.HTTPConnection] = {}

    def get(self, url: str) -> bytes:
        parts = urllib.parse.urlsplit(url)
        conn = self._conns.get(parts.netloc)
        if conn is None:
            conn = self._conns[parts.netloc] = http.client.HTTPConnection(parts.netloc, timeout=60)
        try:
            conn.request("GET", parts.path)
            return conn.getresponse().read()
        except (http.client.HTTPException, ConnectionError):
            conn.close()  # closed while idle: once more, on a new connection
            conn.request("GET", parts.path)
            return conn.getresponse().read()

    def keep_warm(self, until: float) -> None:
        """Use every connection every few seconds until `until` (servers close idle ones)."""
        while (left := until - time.time()) > 0:
            time.sleep(min(5.0, left))
            for netloc in list(self._conns):
                self.get(f"http://{netloc}/healthz")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


# -- the run --------------------------------------------------------------------------------------


class Run:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[subprocess.Popen] = []

    def start(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.procs.append(proc)
        return proc

    def wait_http(self, url: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while True:
            try:
                fetch(url, timeout=2)
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url} did not come up; logs in {self.workdir}") from None
                time.sleep(0.1)

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(target: int, origin: int, args: argparse.Namespace, measure: Callable[[], None],
         scraper: Scraper) -> dict:
    """`args.viewers` viewers on 127.0.0.1:target (and the probes straight on the origin). They
    join over `--ramp` s, settle for `--warmup` s, then are measured for `--seconds` s; `measure`
    is called when the measured window opens."""
    since = time.time() + args.ramp + args.warmup
    window = llviewers.Window(since, since + args.seconds)
    audio = not args.no_audio
    children = llviewers.spread("127.0.0.1", target, args.viewers, args.client_procs, window, args.ramp,
                                VIDEO, list(RENDITIONS), nice=args.client_nice, audio=audio)
    probe = llviewers.spawn("127.0.0.1", origin, len(RENDITIONS), window, 0, 0, VIDEO, list(RENDITIONS),
                            mark="?probe=1", audio=audio)
    scraper.keep_warm(since)
    measure()
    limit = args.ramp + args.warmup + args.seconds + 120
    measured = llviewers.collect(children, limit)
    probed = llviewers.collect([probe], limit)
    first = {key: min(times) for key, times in probed["answered"].items()}
    measured["added"] = [at - first[key] for key, times in measured["answered"].items() if key in first
                         for at in times]
    return measured


def listen_drops() -> int:
    """The kernel's count of connections dropped because an accept queue was full (the whole
    machine's: other work shows up too)."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            return int(dict(zip(names.split(), values.split(), strict=False)).get("ListenOverflows", 0))
    return 0


def lag_buckets(scraper: Scraper, edge: str) -> dict[float, float]:
    return llviewers.lag_buckets(scraper.get(edge + "/metrics").decode())


def upstream_counts(before: dict, after: dict, audio: bool = True) -> dict[str, dict[str, float]]:
    """Requests the origin got during the run, by kind, and the distinct keys asked for: for the
    video renditions ("video") and the audio one ("audio", when there is one), apart."""
    counts = {media: {"part": 0, "blocking": 0, "plain": 0, "other": 0, "part_keys": 0, "blocking_keys": 0}
              for media in (("video", "audio") if audio else ("video",))}
    for path, n in after["requests"].items():
        n -= before["requests"].get(path, 0)
        if n <= 0 or "probe=1" in path:
            continue
        kind = ("part" if "/part_" in path else "blocking" if "_HLS_msn" in path
                else "plain" if path.endswith("index.m3u8") else "other")
        media = counts["audio" if f"/{AUDIO}/" in path and audio else "video"]
        media[kind] += n
        if kind in ("part", "blocking"):
            media[f"{kind}_keys"] += 1
    made = after["done"] - before["done"]
    counts["video"]["parts"] = made * len(RENDITIONS)
    if audio:
        counts["audio"]["parts"] = made
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which viewers join")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp before measuring")
    parser.add_argument("--part-target", type=float, default=1.0)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--client-nice", type=int, default=0,
                        help="the viewer processes' nice value (10: they yield the CPU to the edge, as "
                             "viewers on other machines would; the probe keeps 0)")
    parser.add_argument("--logs", default=None, help="keep the origin's and edge's logs in this directory")
    parser.add_argument("--skip-direct", action="store_true", help="no run straight to the origin")
    parser.add_argument("--no-audio", action="store_true",
                        help="no audio rendition at the origin, video-only viewers (the old benchmark)")
    args = parser.parse_args()

    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} ({os.cpu_count()} CPUs)",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        run = Run(logs)
        try:
            origin_port, edge_port = free_port(), free_port()
            origin = f"http://127.0.0.1:{origin_port}"
            run.start("origin", [PYTHON, "-m", "loadtest.liveorigin", "--port", str(origin_port),
                                 "--video", VIDEO, "--renditions", ",".join(RENDITIONS),
                                 "--audio", "" if args.no_audio else AUDIO,
                                 "--part-target", str(args.part_target)])
            edge = run.start("edge", [PYTHON, "-m", "reel", "edge", "--region", "bench", "--origin", origin,
                                      "--port", str(edge_port), "--workers", "1", "--cache-mb", "64"])
            run.wait_http(origin + "/healthz")
            run.wait_http(f"http://127.0.0.1:{edge_port}/healthz")
            time.sleep(3 * args.part_target * 6)  # a few segments on the air first

            scraper = Scraper()
            scraper.get(origin + "/healthz")
            scraper.get(f"http://127.0.0.1:{edge_port}/healthz")
            results = {}
            for name, port in (("edge", edge_port), ("direct", origin_port)):
                if name == "direct" and args.skip_direct:
                    continue
                mark: dict = {}

                def measure(mark: dict = mark) -> None:
                    mark.update(before=json.loads(scraper.get(origin + "/stats")),
                                lag=lag_buckets(scraper, f"http://127.0.0.1:{edge_port}"),
                                cpu=cpu_seconds(edge.pid), started=time.monotonic(),
                                drops=listen_drops())

                measured = load(port, origin_port, args, measure, scraper)
                # Until the last viewer's last request: about --seconds (a held reload may end later).
                elapsed = max(args.seconds, time.monotonic() - mark["started"] - 1.0)
                before, lag, cpu = mark["before"], mark["lag"], mark["cpu"]
                measured["edge_cpu"] = (cpu_seconds(edge.pid) - cpu) / elapsed if name == "edge" else None
                measured["drops"] = listen_drops() - mark["drops"]
                measured["upstream"] = upstream_counts(before, json.loads(scraper.get(origin + "/stats")),
                                                       not args.no_audio)
                if name == "edge":
                    after = lag_buckets(scraper, f"http://127.0.0.1:{edge_port}")
                    measured["lag"] = [llviewers.bucket_percentile(lag, after, p) for p in (50, 99)]
                results[name] = measured
            report(results, args)
        finally:
            run.stop()


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    audio = ", no audio" if args.no_audio else f" and audio ({AUDIO}), followed by every viewer"
    print(f"\n{args.viewers} LL-HLS viewers of one stream ({len(RENDITIONS)} video renditions{audio}; "
          f"parts of {args.part_target:.3f} s) for {args.seconds:.0f} s; one edge process "
          f"(reel edge --workers 1)\n")
    rows = []
    for name, r in results.items():
        # Each media apart: an audio part is a part of its own rendition, not half a video one.
        behind = sum(up["part"] + up["blocking"] + up["plain"] for up in r["upstream"].values())
        rows.append((name, r, behind))
        print(f"[{name}]")
        for media, up in r["upstream"].items():
            parts = max(up["parts"], 1)
            print(f"  origin requests per part per rendition, {media}: part {up['part'] / parts:.2f}, "
                  f"blocking reload {up['blocking'] / parts:.2f}, plain reload {up['plain'] / parts:.2f} "
                  f"({up['parts']} parts x renditions made during the run)")
            print(f"  origin requests per distinct key, {media}: parts "
                  f"{up['part'] / max(up['part_keys'], 1):.2f}, blocking reloads "
                  f"{up['blocking'] / max(up['blocking_keys'], 1):.2f}")
        print(f"  added latency vs a direct probe: p50 {percentile(r['added'], 50) * 1000:.1f} ms, "
              f"p99 {percentile(r['added'], 99) * 1000:.1f} ms over {len(r['added'])} answers "
              f"({r['audio_answers']} of them audio's)")
        p50, p99 = percentile(r["latency"], 50), percentile(r["latency"], 99)
        print(f"  viewer latency (part received - its end by PDT): p50 {p50 * 1000:.0f} ms, "
              f"p99 {p99 * 1000:.0f} ms")
        minutes = args.viewers * args.seconds / 60
        print(f"  stalls: {r['stalls']} ({r['stalls'] / minutes:.3f} per viewer-minute); failures: "
              f"{len(r['failures'])} {sorted(set(map(str, r['failures'])))[:5]}")
        if r.get("lag"):
            (p50, n), (p99, _) = r["lag"]
            print(f"  edge-added latency (upstream's last byte in -> waiter's last byte out, the edge's "
                  f"histogram): p50 <= {p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms over {n} waiters")
        if r["edge_cpu"] is not None:
            per = r["edge_cpu"] / args.viewers * 1000
            print(f"  edge CPU: {r['edge_cpu']:.2f} s/s, {per:.2f} s/s per 1,000 viewers")
        print(f"  viewer processes: {r['procs']} using {r['cpu'] / max(r['seconds'], 1):.2f} CPU s/s of "
              f"{os.cpu_count()} cores, their event loops late by p99 {r['loop_lag_p99'] * 1000:.0f} ms "
              f"(a 50 ms timer); accept-queue overflows (whole machine): {r['drops']}")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    if len(rows) == 2:
        (_, e, e_up), (_, d, d_up) = rows
        print("\n[ratios, direct / edge]")
        print(f"  origin requests (offload, video and audio): {d_up / max(e_up, 1):.0f}x")
        p99e, p99d = percentile(e["latency"], 99), percentile(d["latency"], 99)
        print(f"  viewer latency p99: {p99d / p99e:.2f}x; stalls: {d['stalls']} vs {e['stalls']}")


if __name__ == "__main__":
    main()
