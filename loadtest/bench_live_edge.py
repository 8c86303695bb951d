"""One edge in front of one LL-HLS stream, with thousands of viewers, against the same viewers
sent straight to the origin, in one run (by hand; issue 15):

    .venv/bin/python loadtest/bench_live_edge.py [--viewers 2000] [--seconds 20] [--part-target 0.5]

The origin is loadtest/liveorigin.py (parts made on a clock, blocking reloads, hinted parts
streamed as they grow; no encoder, so the figures are the edge's, not ffmpeg's), with two
renditions. The edge is `reel edge --workers 1`. Viewers are asyncio clients, many per process
(`--client-procs`), each doing what hls.js does in low-latency mode on one rendition: a plain
reload to tune in, then for every part the blocking reload for the next part
(`_HLS_msn`/`_HLS_part`, as hls.js computes them) and the preload-hinted part, both at once.
One probe viewer per rendition asks the origin directly throughout, in a process of its own.

Printed, for the edge run and the direct run:
  - upstream requests per part per rendition (the origin's own count, over the parts the stream
    made while viewers watched), and per distinct key (target: exactly 1 behind the edge);
  - added latency: when a viewer got a blocking reload's answer minus when the probe got the same
    answer straight from the origin, p50/p99 (it includes the client processes' own lag);
  - viewer latency p50/p99: part received minus the part's end by PROGRAM-DATE-TIME;
  - stalls: a viewer starts PART-HOLD-BACK behind live and plays in real time; a part arriving
    after its play time is a stall;
  - failures (non-200 answers, broken connections); edge CPU seconds per second per 1,000 viewers;
and the ratios (offload: origin requests direct / behind the edge).
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

import httptools

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.llhls import LivePlaylist  # noqa: E402

PYTHON = sys.executable
VIDEO = "celeb0001"
RENDITIONS = ("v720", "v360")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 10.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


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


# -- the viewers (a child process runs many) -------------------------------------------------------


class _Answer(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection's responses, parsed by httptools as they arrive."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiting: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.headers: dict[bytes, bytes] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail(exc or ConnectionResetError("closed"))

    def _fail(self, exc: Exception) -> None:
        if self.waiting is not None and not self.waiting.done():
            self.waiting.set_exception(exc if isinstance(exc, OSError) else OSError(str(exc)))

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.lower()] = value

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.waiting is not None and not self.waiting.done():
            # Stamped as it arrives: what a viewer measures is not its process's own backlog.
            self.waiting.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body),
                                     time.time()))


class Http:
    """One keep-alive connection, reopened when it breaks: thousands run in one process."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.protocol: _Answer | None = None

    async def get(self, path: str) -> tuple[int, dict[bytes, bytes], bytes, float]:
        for attempt in (0, 1):
            if self.protocol is None or self.protocol.transport is None:
                loop = asyncio.get_running_loop()
                _, self.protocol = await loop.create_connection(_Answer, self.host, self.port)
            protocol = self.protocol
            protocol.waiting = asyncio.get_running_loop().create_future()
            protocol.body, protocol.headers = [], {}
            assert protocol.transport is not None
            protocol.transport.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            try:
                return await protocol.waiting
            except OSError:
                self.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.close()
        self.protocol = None


_PARSED: dict[bytes, LivePlaylist] = {}


def parsed(body: bytes) -> LivePlaylist:
    """A playlist read once per process: every viewer of a rendition gets the same bytes."""
    playlist = _PARSED.get(body)
    if playlist is None:
        if len(_PARSED) > 256:
            _PARSED.clear()
        playlist = _PARSED[body] = LivePlaylist(body.decode())
    return playlist


class Viewer:
    def __init__(self, host: str, port: int, rendition: str, window: tuple[float, float],
                 log: dict[str, list], mark: str = "") -> None:
        self.base = f"/live/{VIDEO}/{rendition}/"
        self.mark = mark  # the probe's: its requests are told apart in the origin's count
        self.playlist_conn, self.part_conn = Http(host, port), Http(host, port)
        (self.since, self.until), self.log = window, log
        self.play_origin: float | None = None  # wall time at which media time 0 plays

    async def run(self) -> None:
        try:
            status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
            if status != 200:
                self.log["failures"].append(status)
                return
            playlist = parsed(body)
            if playlist.last is not None and playlist.last in playlist.ends:
                # Start PART-HOLD-BACK behind the live edge, playing in real time from now.
                self.play_origin = time.time() + playlist.hold - playlist.ends[playlist.last]
            while time.time() < self.until:
                wanted = playlist.next()
                hint = playlist.hint
                if wanted is None or hint is None:
                    return
                query = f"?_HLS_msn={wanted[0]}&_HLS_part={wanted[1]}"
                reload, part = await asyncio.gather(
                    self.playlist_conn.get(self.base + "index.m3u8" + query + self.mark.replace("?", "&")),
                    self.part_conn.get(self.base + hint[0] + self.mark))
                now = max(reload[3], part[3])
                if reload[0] != 200 or part[0] != 200:
                    if now >= self.since:
                        self.log["failures"].append(reload[0] if reload[0] != 200 else part[0])
                    await asyncio.sleep(0.5)
                    status, _, body, _ = await self.playlist_conn.get(self.base + "index.m3u8")
                    playlist = parsed(body) if status == 200 else playlist
                    continue
                playlist = parsed(reload[2])
                end = playlist.ends.get(hint[1])
                if now < self.since:  # still joining: not measured
                    if end is not None:
                        self.play_origin = now - end + playlist.target if self.play_origin is None \
                            else max(self.play_origin, now - end + playlist.target)
                    continue
                self.log["answered"].append((self.base + query, reload[3]))
                if end is not None:
                    self.log["latency"].append(now - end)
                    if self.play_origin is not None and now > self.play_origin + end - playlist.target:
                        self.log["stalls"].append(now)
                        self.play_origin = now - end + playlist.target  # rebuffered: plays from here
        except (OSError, ValueError) as exc:
            self.log["failures"].append(type(exc).__name__)
        finally:
            self.playlist_conn.close()
            self.part_conn.close()


async def viewers(host: str, port: int, count: int, since: float, until: float, ramp: float,
                  first: int, mark: str) -> dict:
    log: dict[str, list] = {"latency": [], "stalls": [], "failures": [], "answered": []}
    tasks = []
    for i in range(count):
        rendition = RENDITIONS[(first + i) % len(RENDITIONS)]
        tasks.append(asyncio.create_task(Viewer(host, port, rendition, (since, until), log, mark).run()))
        await asyncio.sleep(ramp / max(count, 1))
    await asyncio.gather(*tasks)
    return log


def child(argv: list[str]) -> None:
    host, port, count, since, until, ramp, first, mark = (*argv, "")[:8]
    try:
        import uvloop
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    log = runner(viewers(host, int(port), int(count), float(since), float(until), float(ramp), int(first),
                         mark))
    # The probe's answers by key (first time each key was answered) for added latency.
    answered: dict[str, list[float]] = {}
    for key, at in log.pop("answered"):
        answered.setdefault(key, []).append(at)
    json.dump({**log, "answered": answered}, sys.stdout)


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
    per = -(-args.viewers // args.client_procs)
    since = time.time() + args.ramp + args.warmup
    window = [str(since), str(since + args.seconds)]
    children = []
    for i in range(args.client_procs):
        count = min(per, args.viewers - i * per)
        children.append(subprocess.Popen(
            [PYTHON, __file__, "--child", "127.0.0.1", str(target), str(count), *window,
             str(args.ramp), str(i)], stdout=subprocess.PIPE, cwd=ROOT))
    probe = subprocess.Popen([PYTHON, __file__, "--child", "127.0.0.1", str(origin), str(len(RENDITIONS)),
                              *window, "0", "0", "?probe=1"], stdout=subprocess.PIPE, cwd=ROOT)
    scraper.keep_warm(since)
    measure()
    limit = args.ramp + args.warmup + args.seconds + 120
    logs = [json.loads(c.communicate(timeout=limit)[0]) for c in children]
    probed = json.loads(probe.communicate(timeout=limit)[0])
    first = {key: min(times) for key, times in probed["answered"].items()}
    added = [at - first[key] for log in logs for key, times in log["answered"].items() if key in first
             for at in times]
    latency = [x for log in logs for x in log["latency"]]
    stalls = sum(len(log["stalls"]) for log in logs)
    failures = [f for log in logs for f in log["failures"]]
    return {"added": added, "latency": latency, "stalls": stalls, "failures": failures,
            "answers": sum(len(t) for log in logs for t in log["answered"].values())}


def lag_buckets(scraper: Scraper, edge: str) -> dict[float, float]:
    """The edge's reel_edge_waiter_lag_seconds histogram: cumulative count by upper bound."""
    buckets = {}
    for line in scraper.get(edge + "/metrics").decode().splitlines():
        if line.startswith("reel_edge_waiter_lag_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[float(bound)] = float(line.rsplit(" ", 1)[1])
    return buckets


def bucket_percentile(before: dict[float, float], after: dict[float, float], p: float) -> tuple[float, int]:
    """(the upper bound of the bucket holding the p-th percentile, the count) of what was added."""
    added = {bound: after[bound] - before.get(bound, 0.0) for bound in sorted(after)}
    total = added.get(float("inf"), 0.0)
    for bound, count in added.items():
        if total and count >= p / 100 * total:
            return bound, int(total)
    return float("nan"), int(total)


def upstream_counts(before: dict, after: dict) -> dict[str, float]:
    """Requests the origin got during the run, by kind, and the distinct keys asked for."""
    counts = {"part": 0, "blocking": 0, "plain": 0, "other": 0}
    keys = {"part": 0, "blocking": 0}
    for path, n in after["requests"].items():
        n -= before["requests"].get(path, 0)
        if n <= 0 or "probe=1" in path:
            continue
        kind = ("part" if "/part_" in path else "blocking" if "_HLS_msn" in path
                else "plain" if path.endswith("index.m3u8") else "other")
        counts[kind] += n
        if kind in keys:
            keys[kind] += 1
    parts = (after["done"] - before["done"]) * len(RENDITIONS)
    return {**counts, "parts": parts, "part_keys": keys["part"], "blocking_keys": keys["blocking"]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--viewers", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--ramp", type=float, default=10.0, help="seconds over which viewers join")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds after the ramp before measuring")
    parser.add_argument("--part-target", type=float, default=1.0)
    parser.add_argument("--client-procs", type=int, default=4)
    parser.add_argument("--logs", default=None, help="keep the origin's and edge's logs in this directory")
    parser.add_argument("--skip-direct", action="store_true", help="no run straight to the origin")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-live-") as tmp:
        logs = Path(args.logs or tmp)
        logs.mkdir(parents=True, exist_ok=True)
        run = Run(logs)
        try:
            origin_port, edge_port = free_port(), free_port()
            origin = f"http://127.0.0.1:{origin_port}"
            run.start("origin", [PYTHON, "-m", "loadtest.liveorigin", "--port", str(origin_port),
                                 "--video", VIDEO, "--renditions", ",".join(RENDITIONS),
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
                                cpu=cpu_seconds(edge.pid), started=time.monotonic())

                measured = load(port, origin_port, args, measure, scraper)
                # Until the last viewer's last request: about --seconds (a held reload may end later).
                elapsed = max(args.seconds, time.monotonic() - mark["started"] - 1.0)
                before, lag, cpu = mark["before"], mark["lag"], mark["cpu"]
                measured["cpu"] = (cpu_seconds(edge.pid) - cpu) / elapsed if name == "edge" else None
                measured["upstream"] = upstream_counts(before, json.loads(scraper.get(origin + "/stats")))
                if name == "edge":
                    after = lag_buckets(scraper, f"http://127.0.0.1:{edge_port}")
                    measured["lag"] = [bucket_percentile(lag, after, p) for p in (50, 99)]
                results[name] = measured
            report(results, args)
        finally:
            run.stop()


def report(results: dict[str, dict], args: argparse.Namespace) -> None:
    print(f"\n{args.viewers} LL-HLS viewers of one stream ({len(RENDITIONS)} renditions, parts of "
          f"{args.part_target:.3f} s) for {args.seconds:.0f} s; one edge process (reel edge --workers 1)\n")
    rows = []
    for name, r in results.items():
        up = r["upstream"]
        parts = max(up["parts"], 1)
        behind = up["part"] + up["blocking"] + up["plain"]
        rows.append((name, r, up, parts, behind))
        print(f"[{name}]")
        print(f"  origin requests per part per rendition: part {up['part'] / parts:.2f}, blocking reload "
              f"{up['blocking'] / parts:.2f}, plain reload {up['plain'] / parts:.2f} "
              f"({parts} parts x renditions made during the run)")
        print(f"  origin requests per distinct key: parts {up['part'] / max(up['part_keys'], 1):.2f}, "
              f"blocking reloads {up['blocking'] / max(up['blocking_keys'], 1):.2f}")
        print(f"  added latency vs a direct probe: p50 {percentile(r['added'], 50) * 1000:.1f} ms, "
              f"p99 {percentile(r['added'], 99) * 1000:.1f} ms over {len(r['added'])} answers")
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
        if r["cpu"] is not None:
            per = r["cpu"] / args.viewers * 1000
            print(f"  edge CPU: {r['cpu']:.2f} s/s, {per:.2f} s/s per 1,000 viewers")
    if len(rows) == 2:
        (_, e, _, _, e_up), (_, d, _, _, d_up) = rows
        print("\n[ratios, direct / edge]")
        print(f"  origin requests (offload): {d_up / max(e_up, 1):.0f}x")
        p99e, p99d = percentile(e["latency"], 99), percentile(d["latency"], 99)
        print(f"  viewer latency p99: {p99d / p99e:.2f}x; stalls: {d['stalls']} vs {e['stalls']}")


if __name__ == "__main__":
    main()
