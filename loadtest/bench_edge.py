"""The edge against nginx and Varnish, in front of the same slow origin, in one run (by hand).

    .venv/bin/python loadtest/bench_edge.py [--seconds 10] [--waiters 1000] [--cache-mb 32]

Needs nginx, varnishd and wrk (Debian: apt-get install nginx varnish wrk). Each runs from a config
written into a temporary directory, on loopback ports picked at start; nothing else is touched.
The origin answers every object after 200 ms. Printed, for reel, nginx and Varnish, and as ratios
(issue 4, item 9):

  1. coalesced waiters: with N clients asking for one cold 2 MiB object at once, each client's
     first byte minus the time the origin sent its head, p50/p99/max, and how many times the
     origin was asked. Two clocks for the first byte: the kernel's receive time (SO_TIMESTAMPNS),
     which nothing the client process does can delay, and the time the client process read it,
     which adds the client's own trip round a thousand sockets on the same two CPUs;
  2. hot playlist: requests/s for one cached 829-byte playlist (wrk, keep-alive);
  3. hot segment: bytes/s for one cached 2 MiB segment (wrk);
  4. byte hit ratio: a Zipf(1.1) replay of a catalog ten times the cache, the same sequence and
     the same cache size for every peer; 1 - origin bytes / client bytes. nginx prunes its cache
     to max_size only when its cache manager wakes, so its manager is woken every 10 ms (see
     nginx_conf), the replay starts no request while nginx's cache files exceed the cache size,
     and the mean and peak of what they took on disk are printed beside its figure.

Figures 1 to 3 are taken in `--rounds` rounds, the peers' order rotated each round, and the
median is printed: on a shared machine the load drifts, and a fixed order would hand the quiet
moments to one peer.

Every peer gets the same number of workers for 1 to 3 (`--workers`, by default one per CPU):
reel `--workers N` (each key has an owner worker that alone fetches it from the origin, so a
burst still makes one origin fetch: edge/workers.py), nginx `worker_processes N` with
proxy_cache_lock on, Varnish `thread_pools=N` with malloc storage. For 4 reel runs one worker,
since its workers keep a cache each and the comparison is at equal cache size.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest.edge_bench.origin import catalog_sizes  # noqa: E402
from loadtest.edge_bench.replay import cache_bytes  # noqa: E402

PYTHON = sys.executable
PEERS = ("reel", "nginx", "varnish")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str, timeout: float = 30.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback only
        return resp.read()


class Processes:
    """Everything this run started, stopped at the end whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        log = (self.workdir / f"{name}.log").open("wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=ROOT, **kw)
        self.procs.append((name, proc))
        return proc

    def wait_http(self, name: str, url: str, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                fetch(url, timeout=2)
                return
            except OSError:
                time.sleep(0.1)
        log = (self.workdir / f"{name}.log").read_text(errors="replace")[-2000:]
        raise SystemExit(f"{name} did not come up at {url}:\n{log}")

    def stop(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for _, proc in reversed(self.procs):
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def nginx_conf(workdir: Path, port: int, origin: int, cache_mb: int, workers: int) -> Path:
    tmp = workdir / "nginx"
    for sub in ("cache", "beat", "tmp"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    # nginx enforces max_size only in its cache manager process, which sleeps up to 10 s between
    # passes once the cache is under max_size: in a replay that long its cache grows to many
    # times max_size. The manager runs every zone's pass each time it wakes, and it wakes again
    # after manager_sleep whenever a pass deleted manager_files expired entries; so a second,
    # tiny zone ("beat") whose entries expire after a second, fed by HeartBeat, wakes it every
    # 10 ms and the main zone is pruned back to max_size within milliseconds of each miss.
    conf.write_text(f"""
user root;
worker_processes {workers};
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  client_body_temp_path {tmp}/tmp; proxy_temp_path {tmp}/tmp; fastcgi_temp_path {tmp}/tmp;
  uwsgi_temp_path {tmp}/tmp; scgi_temp_path {tmp}/tmp;
  proxy_cache_path {tmp}/cache levels=1:2 keys_zone=edge:16m max_size={cache_mb}m inactive=1d
                   use_temp_path=off;
  proxy_cache_path {tmp}/beat levels=1:2 keys_zone=beat:4m inactive=1s
                   manager_files=1 manager_sleep=10ms use_temp_path=off;
  upstream origin {{ server 127.0.0.1:{origin}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://origin;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_cache edge;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 30s;
      proxy_cache_lock_age 30s;
      proxy_read_timeout 30s;
      add_header X-Cache $upstream_cache_status;
    }}
    location /beat/ {{
      rewrite ^ /ok break;
      proxy_pass http://127.0.0.1:{port};
      proxy_cache beat;
      proxy_cache_key $request_uri;
      proxy_cache_valid 200 1h;
    }}
    location = /ok {{ return 200 "ok"; }}
  }}
}}
""")
    return conf


def varnish_vcl(workdir: Path, origin: int) -> Path:
    vcl = workdir / "varnish.vcl"
    vcl.write_text(f"""vcl 4.1;
backend origin {{ .host = "127.0.0.1"; .port = "{origin}"; .first_byte_timeout = 30s; }}
""")
    return vcl


def wrk(url: str, seconds: int, connections: int, threads: int) -> tuple[float, float, int]:
    """(requests/s, bytes/s, non-2xx) from one wrk run."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", url]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    value, unit = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out).groups()
    scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}[unit]
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rate, float(value) * scale, int(bad.group(1)) if bad else 0


def origin_stats(origin: str) -> dict:
    return json.loads(fetch(f"{origin}/stats"))


class CacheSize(threading.Thread):
    """`cache_bytes(path)` every 20 ms while watched: the largest and the mean."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.samples, self._finished = path, [0], threading.Event()

    def run(self) -> None:
        while not self._finished.wait(0.02):
            self.samples.append(cache_bytes(self.path))

    def stop(self) -> tuple[int, float]:
        """(peak, mean) bytes."""
        self._finished.set()
        self.join(5)
        return max(self.samples), statistics.fmean(self.samples)


class HeartBeat(threading.Thread):
    """Asks nginx for a new /beat/ object every 10 ms, so its cache manager always has an
    expired one to delete and wakes every 10 ms (see nginx_conf)."""

    def __init__(self, port: int, cache: Path) -> None:
        super().__init__(daemon=True)
        self.port, self.cache, self._finished = port, cache, threading.Event()

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        beat = 0
        while not self._finished.wait(0.01):
            beat += 1
            try:
                conn.request("GET", f"/beat/{beat}")
                conn.getresponse().read()
            except (OSError, http.client.HTTPException):
                conn.close()

    def wait_for_manager(self, within: float = 30.0) -> None:
        """Until the manager has deleted the first beat: it wakes 10 s after nginx starts, and
        only from then on every 10 ms."""
        digest = hashlib.md5(b"/beat/1").hexdigest()  # noqa: S324 - nginx's cache file name
        first = self.cache / digest[-1] / digest[-3:-1] / digest
        deadline = time.monotonic() + within
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        while first.exists():
            if time.monotonic() > deadline:
                raise SystemExit("nginx's cache manager never pruned its beat zone")
            time.sleep(0.05)

    def stop(self) -> None:
        self._finished.set()
        self.join(5)


def rotated(items: tuple[str, ...], by: int) -> tuple[str, ...]:
    by %= len(items)
    return items[by:] + items[:by]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of figures 1-3 (median)")
    parser.add_argument("--connections", type=int, default=50, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--waiters", type=int, default=1000, help="clients for one cold object")
    parser.add_argument("--cache-mb", type=int, default=32, help="cache size of every peer (hit-ratio run)")
    parser.add_argument("--requests", type=int, default=4000, help="requests in the Zipf replay")
    parser.add_argument("--concurrency", type=int, default=16, help="replay concurrency")
    parser.add_argument("--delay", type=float, default=0.2, help="origin delay, seconds")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)),
                        help="workers of every peer for 1-3: reel --workers, nginx worker_processes, "
                             "Varnish thread_pools (default: one per CPU)")
    args = parser.parse_args()
    for tool in ("nginx", "varnishd", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} not found: apt-get install nginx varnish wrk")

    sizes, catalog = catalog_sizes(100_000), 0
    total = 0
    while total < 10 * args.cache_mb * 2**20:
        total += sizes[catalog]
        catalog += 1

    workdir = Path(tempfile.mkdtemp(prefix="reel-bench-"))
    workdir.chmod(0o755)  # varnishd's child runs as the varnish user
    procs = Processes(workdir)
    ports = {name: free_port() for name in ("origin", "reel", "reel1", "nginx", "varnish")}
    urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
    try:
        procs.start("origin", [PYTHON, "-m", "loadtest.edge_bench.origin", str(ports["origin"]),
                               str(args.delay), str(catalog)])
        procs.wait_http("origin", urls["origin"] + "/healthz")
        edge = [PYTHON, "-m", "reel", "edge", "--region", "bench", "--origin", urls["origin"],
                "--prefetch", "0"]
        procs.start("reel", [*edge, "--port", str(ports["reel"]), "--workers", str(args.workers),
                             "--cache-mb", "256"])
        procs.start("reel1", [*edge, "--port", str(ports["reel1"]), "--workers", "1",
                              "--cache-mb", str(args.cache_mb)])
        conf = nginx_conf(workdir, ports["nginx"], ports["origin"], args.cache_mb, args.workers)
        procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(workdir / "nginx")])
        beat = HeartBeat(ports["nginx"], workdir / "nginx" / "beat")
        procs.start("varnish", ["varnishd", "-F", "-a", f"127.0.0.1:{ports['varnish']}",
                                "-f", str(varnish_vcl(workdir, ports["origin"])),
                                "-s", f"malloc,{args.cache_mb}m", "-n", str(workdir / "varnish"),
                                "-p", f"thread_pools={args.workers}", "-p", "thread_pool_min=200"])
        for name in ("reel", "reel1"):
            procs.wait_http(name, urls[name] + "/healthz")
        for name in ("nginx", "varnish"):
            procs.wait_http(name, urls[name] + "/vod/warm/index.m3u8")
        beat.start()
        single = {"reel": urls["reel1"], "nginx": urls["nginx"], "varnish": urls["varnish"]}
        multi = {"reel": urls["reel"], "nginx": urls["nginx"], "varnish": urls["varnish"]}
        results: dict[str, dict[str, object]] = {peer: {} for peer in PEERS}

        print(f"Zipf(1.1) replay: {args.requests} requests over {catalog} objects "
              f"({total / 2**20:.0f} MiB), caches of {args.cache_mb} MiB", flush=True)
        for peer in PEERS:
            before = origin_stats(urls["origin"])["bytes"]
            watch = None
            if peer == "nginx":
                beat.wait_for_manager()
                watch = CacheSize(workdir / "nginx" / "cache")
                watch.start()
            hold = ["--hold", str(workdir / "nginx" / "cache"), str(args.cache_mb * 2**20)] if watch else []
            out = subprocess.run([PYTHON, "-m", "loadtest.edge_bench.replay", single[peer], str(catalog),
                                  str(args.requests), str(args.concurrency), *hold],
                                 capture_output=True, text=True, cwd=ROOT, timeout=900, check=True)
            replay = json.loads(out.stdout)
            fetched = origin_stats(urls["origin"])["bytes"] - before
            results[peer]["byte_hit"] = 1 - fetched / replay["bytes"]
            held = ""
            if watch is not None:
                beat.stop()
                peak, mean = watch.stop()
                held = f", cache files on disk: mean {mean / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB"
            results[peer]["held"] = held
            print(f"  {peer:8} byte hit ratio {results[peer]['byte_hit']:.3f}  ({replay['seconds']:.1f} s, "
                  f"statuses {replay['statuses']}{held})", flush=True)

        print(f"{args.waiters} waiters for one cold 2 MiB object, origin delay {args.delay * 1000:.0f} ms",
              flush=True)
        for peer in PEERS:
            results[peer].update(p99s=[], read_p99s=[], fetches=0, playlists=[], segments=[])
        for round_ in range(args.rounds):
            for peer in rotated(PEERS, round_):
                path = f"/vod/cold-{peer}-{os.getpid()}-{round_}/seg_00001.m4s"
                host, port = multi[peer].removeprefix("http://").split(":")
                argv = [PYTHON, "-m", "loadtest.edge_bench.waiters", host, port, path, str(args.waiters)]
                out = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=120, check=True)
                waiters = json.loads(out.stdout)
                stats = origin_stats(urls["origin"])
                head = stats["heads"][path][0]
                late = [(t - head) * 1000 for t in waiters["first"]]
                read = [(t - head) * 1000 for t in waiters["read"]]
                results[peer]["p99s"].append(percentile(late, 99))
                results[peer]["read_p99s"].append(percentile(read, 99))
                results[peer]["fetches"] = max(results[peer]["fetches"], stats["requests"][path])
                print(f"  {peer:8} first byte - origin's, ms: kernel p50 {percentile(late, 50):6.1f} "
                      f"p99 {percentile(late, 99):6.1f} max {max(late):6.1f} | read p50 "
                      f"{percentile(read, 50):6.1f} p99 {percentile(read, 99):6.1f}  "
                      f"origin fetches {stats['requests'][path]}  statuses {dict(waiters['statuses'])}",
                      flush=True)
        for peer in PEERS:
            results[peer]["p99"] = statistics.median(results[peer]["p99s"])
            results[peer]["read_p99"] = statistics.median(results[peer]["read_p99s"])

        for label, path, key in (("hot playlist", "/vod/hot/index.m3u8", "playlist"),
                                 ("hot 2 MiB segment", "/vod/hot/seg_00001.m4s", "segment")):
            print(f"{label}: wrk -t{args.threads} -c{args.connections} -d{args.seconds}s", flush=True)
            for peer in PEERS:
                for _ in range(20):  # warm every worker
                    fetch(multi[peer] + path)
            for round_ in range(args.rounds):
                for peer in rotated(PEERS, round_):
                    rate, throughput, bad = wrk(multi[peer] + path, args.seconds, args.connections,
                                                args.threads)
                    results[peer][key + "s"].append(rate if key == "playlist" else throughput)
                    print(f"  {peer:8} {rate:10.0f} req/s  {throughput / 1e9:6.2f} GB/s  non-2xx {bad}",
                          flush=True)
            for peer in PEERS:
                results[peer][key] = statistics.median(results[peer][key + "s"])

        report(results, args)
    finally:
        procs.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def report(results: dict[str, dict[str, object]], args: argparse.Namespace) -> None:
    reel, nginx, varnish = (results[p] for p in PEERS)
    best_segment = max(nginx["segment"], varnish["segment"])
    print()
    print(f"{'':34}{'reel':>12}{'nginx':>12}{'varnish':>12}   ratio / goal")
    print(f"medians of {args.rounds} rounds for the first three")
    print(f"{'waiter first byte - origin, p99 ms':34}{reel['p99']:12.1f}{nginx['p99']:12.1f}"
          f"{varnish['p99']:12.1f}   goal <= 5 ms at {args.waiters} waiters (kernel receive time)")
    print(f"{'  the same, read by the client':34}{reel['read_p99']:12.1f}{nginx['read_p99']:12.1f}"
          f"{varnish['read_p99']:12.1f}")
    print(f"{'  origin fetches':34}{reel['fetches']:12}{nginx['fetches']:12}{varnish['fetches']:12}   goal 1")
    print(f"{'hot playlist, req/s':34}{reel['playlist']:12.0f}{nginx['playlist']:12.0f}"
          f"{varnish['playlist']:12.0f}   {reel['playlist'] / nginx['playlist']:.2f}x nginx, "
          f"{reel['playlist'] / varnish['playlist']:.2f}x varnish (goal >= 0.6x nginx)")
    print(f"{'hot 2 MiB segment, GB/s':34}{reel['segment'] / 1e9:12.2f}{nginx['segment'] / 1e9:12.2f}"
          f"{varnish['segment'] / 1e9:12.2f}   {reel['segment'] / best_segment:.2f}x the better peer"
          " (goal >= 1.0)")
    print(f"{'byte hit ratio, Zipf(1.1)':34}{reel['byte_hit']:12.3f}{nginx['byte_hit']:12.3f}"
          f"{varnish['byte_hit']:12.3f}   {reel['byte_hit'] - nginx['byte_hit']:+.3f} vs nginx (goal >= 0)")
    print(f"{'':34}(all configured for {args.cache_mb} MiB; nginx{nginx['held']})")
    print(f"{'':34}(1-3: {args.workers} workers each: reel --workers, nginx worker_processes, "
          "Varnish thread_pools)")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
