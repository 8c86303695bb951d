"""View-count benchmark: POST /api/v1/videos/{id}/views from many distinct signed-in viewers.

    python -m loadtest.bench_views [--viewers 30000] [--videos 2] [--workers 0] [--baseline REV]

First the floor: a bare aiohttp app, the same number of SO_REUSEPORT processes, whose POST handler
only answers a small JSON, under the same load (so also the load generator's ceiling): no aiohttp
view endpoint can beat it on this machine. Then peers, in the same run, each on a fresh SQLite
database filled the same way: `reel control
--workers N` (write-behind views, N processes; 0: one per core), the same with one worker, and,
with `--baseline REV` (e.g. the commit before write-behind), that revision's `reel control` (one
view, one transaction) checked out with `git archive`. Every viewer views every video once, so the
exact total is known: after the load each peer's merged counts must equal it (the run fails
otherwise). The viewers' users and sessions are written with plain SQL (loadtest imports nothing
of reel); each sends its own bearer token over keep-alive connections from `--clients` load
processes.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_control(src: Path, data: Path, port: int, workers: int | None) -> subprocess.Popen:
    args = [sys.executable, "-m", "reel", "control", "--data", str(data), "--store",
            str(data / "objects"), "--port", str(port), "--worker-token", "bench",
            "--rate-ip", "0", "--rate-user", "0", "--rate-auth", "0"]
    if workers is not None:
        args.append(f"--workers={workers}")
    proc = subprocess.Popen(args, cwd=src, env={**os.environ, "PYTHONPATH": str(src)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return _wait_up(proc, port)


def _wait_up(proc: subprocess.Popen, port: int) -> subprocess.Popen:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                time.sleep(1.0)  # every worker up, not just the first
                return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise SystemExit("the server did not start")


def _bare_worker(port: int) -> None:
    from aiohttp import web

    async def view(request: web.Request) -> web.Response:
        return web.json_response({"views": 1, "counted": True})

    app = web.Application()
    app.router.add_post("/api/v1/videos/{video_id}/views", view)
    web.run_app(app, host="127.0.0.1", port=port, reuse_port=True, print=None,
                access_log=None, handle_signals=True)


def serve_bare(port: int, workers: int) -> None:
    """`workers` bare processes on `port` (SO_REUSEPORT), until SIGTERM."""
    procs = [multiprocessing.Process(target=_bare_worker, args=(port,)) for _ in range(workers)]
    for proc in procs:
        proc.start()
    signal.sigwait({signal.SIGTERM, signal.SIGINT})
    for proc in procs:
        proc.terminate()
        proc.join(10)


def start_bare(port: int, workers: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "loadtest.bench_views", "--serve-bare",
                             str(port), "--workers", str(workers)], cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, start_new_session=True)
    return _wait_up(proc, port)


def floor(workers: int, args: argparse.Namespace) -> float:
    """Views/s against the bare app: the same requests, nothing counted."""
    port = free_port()
    tokens = [f"bench-token-{i}" for i in range(args.viewers)]
    work = [(f"benchvideo{v:04d}", t) for t in tokens for v in range(args.videos)]
    proc = start_bare(port, workers)
    try:
        seconds, accepted, _ = run_load(f"http://127.0.0.1:{port}", work, args.clients,
                                        args.connections)
    finally:
        stop(proc)
    rate = accepted / seconds
    print(f"{'floor: bare aiohttp, ' + str(workers) + ' workers':<34} {rate:>9,.0f} views/s  "
          f"({accepted} in {seconds:.1f} s; the load generator's ceiling too)", flush=True)
    return rate


def stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)


def fill(db: Path, viewers: int, videos: int) -> tuple[list[str], list[str]]:
    """An owner, `videos` public ready videos, `viewers` users with a session each: (video ids,
    bearer tokens)."""
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    conn.execute("INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                 " VALUES ('benchowner', 'owner@bench.invalid', 'owner', 'x', 0, 0)")
    ids = [f"benchvideo{i:04d}" for i in range(videos)]
    now = time.time()
    conn.executemany(
        "INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at, owner_id,"
        " duration, renditions, privacy) VALUES (?, 'hot', 'ready', 0, ?, ?, 'benchowner', 10,"
        " '[\"v360\"]', 'public')", [(i, now, now) for i in ids])
    users = [f"benchviewer{i:07d}" for i in range(viewers)]
    conn.executemany("INSERT INTO users (id, email, name, password_hash, created_at, updated_at)"
                     " VALUES (?, ? || '@bench.invalid', ?, 'x', 0, 0)", [(u, u, u) for u in users])
    tokens = [f"bench-token-{u}" for u in users]
    conn.executemany(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES (?, ?, ?, ?)",
        [(hashlib.sha256(t.encode()).hexdigest(), u, now, now + 86400)
         for t, u in zip(tokens, users, strict=True)])
    conn.execute("COMMIT")
    conn.close()
    return ids, tokens


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection sending its requests one after another; raw asyncio,
    since an HTTP client library costs more CPU per request than the server under test."""

    def __init__(self, requests: Iterator[bytes], done: asyncio.Future[tuple[int, int]]) -> None:
        self.requests = requests
        self.done = done
        self.buffer = b""
        self.current = b""
        self.accepted = self.refused = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._next()

    def _next(self) -> None:
        assert self.transport is not None
        self.current = next(self.requests, b"")
        if not self.current:
            self.transport.close()
            if not self.done.done():
                self.done.set_result((self.accepted, self.refused))
            return
        self.transport.write(self.current)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        head = self.buffer[:head_end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15:head.find(b"\r\n", at)]) if at >= 0 else 0
        if len(self.buffer) < head_end + 4 + length:
            return
        status = int(self.buffer[9:12])
        body = self.buffer[head_end + 4:head_end + 4 + length]
        self.buffer = self.buffer[head_end + 4 + length:]
        if status == 200:
            self.accepted += 1
            self._next()
        elif status == 503:  # resent after its Retry-After
            self.refused += 1
            asyncio.get_running_loop().call_later(1.0, self.transport.write, self.current)
        elif not self.done.done():
            self.done.set_exception(SystemExit(f"view: {status} {body[:200]!r}"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_exception(SystemExit(f"connection lost: {exc}"))


async def _load(base: str, work: list[tuple[str, str]],
                connections: int) -> tuple[int, int, float, float]:
    """Send every (video, token) view; 503s are sent again after their Retry-After. Returns
    (accepted, refused, when the first was sent, when the last was answered)."""
    host, _, port = base.removeprefix("http://").partition(":")
    requests = iter([f"POST /api/v1/videos/{video}/views HTTP/1.1\r\nHost: {host}\r\n"
                     f"Authorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n".encode()
                     for video, token in work])
    loop = asyncio.get_running_loop()
    results = []
    started = time.monotonic()  # system-wide on Linux: comparable between the load processes
    for _ in range(connections):
        done: asyncio.Future[tuple[int, int]] = loop.create_future()
        await loop.create_connection(lambda d=done: _Connection(requests, d), host, int(port))
        results.append(done)
    answers = await asyncio.wait_for(asyncio.gather(*results), timeout=600)
    return sum(a for a, _ in answers), sum(r for _, r in answers), started, time.monotonic()


def _load_process(base: str, work: list[tuple[str, str]], connections: int,
                  out: multiprocessing.Queue) -> None:
    out.put(asyncio.run(_load(base, work, connections)))


def run_load(base: str, work: list[tuple[str, str]], clients: int,
             connections: int) -> tuple[float, int, int]:
    """(seconds, accepted, refused) for `work`, split over `clients` processes."""
    out: multiprocessing.Queue = multiprocessing.Queue()
    procs = [multiprocessing.Process(target=_load_process,
                                     args=(base, work[i::clients], connections, out))
             for i in range(clients)]
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    seconds = max(r[3] for r in results) - min(r[2] for r in results)
    for proc in procs:
        proc.join()
    return seconds, sum(r[0] for r in results), sum(r[1] for r in results)


async def merged(base: str, ids: list[str], expected: int) -> int:
    """The videos' summed view counts once they reach `expected` (or after 30 s)."""
    deadline = time.monotonic() + 30
    async with aiohttp.ClientSession() as http:
        while True:
            total = 0
            for vid in ids:
                async with http.get(f"{base}/api/v1/videos/{vid}") as resp:
                    total += (await resp.json())["views"]
            if total >= expected or time.monotonic() > deadline:
                return total
            await asyncio.sleep(0.2)


def peer(name: str, src: Path, workers: int | None, args: argparse.Namespace) -> float:
    data = Path(tempfile.mkdtemp(prefix="reel-bench-views-"))
    try:
        port = free_port()
        stop(start_control(src, data, port, 1 if workers is not None else None))  # migrate
        ids, tokens = fill(data / "control.sqlite3", args.viewers, args.videos)
        work = [(vid, token) for token in tokens for vid in ids]
        random.Random(1).shuffle(work)
        proc = start_control(src, data, port, workers)
        base = f"http://127.0.0.1:{port}"
        try:
            seconds, accepted, refused = run_load(base, work, args.clients, args.connections)
            total = asyncio.run(merged(base, ids, len(work)))
        finally:
            stop(proc)
        rate = accepted / seconds
        exact = "exact" if total == len(work) == accepted else "NOT EXACT"
        print(f"{name:<34} {rate:>9,.0f} views/s  ({accepted} in {seconds:.1f} s, {refused} "
              f"refused and resent; counted {total} of {len(work)}: {exact})", flush=True)
        if exact != "exact":
            raise SystemExit(f"{name}: counts are not exact")
        return rate
    finally:
        shutil.rmtree(data, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--viewers", type=int, default=30_000)
    parser.add_argument("--videos", type=int, default=2, help="each viewer views each once")
    parser.add_argument("--workers", type=int, default=0, help="control workers (0: one per core)")
    parser.add_argument("--clients", type=int, default=2, help="load generator processes")
    parser.add_argument("--connections", type=int, default=64, help="per load process")
    parser.add_argument("--baseline", default=None,
                        help="a git revision whose `reel control` is the baseline peer")
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    if args.serve_bare:
        return serve_bare(args.serve_bare, workers)
    print(f"{args.viewers} viewers x {args.videos} videos, {args.clients} load processes x "
          f"{args.connections} connections, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at the start", flush=True)
    bare = floor(workers, args)
    rates = {f"write-behind, {workers} workers": peer(f"write-behind, {workers} workers", REPO,
                                                       workers, args)}
    if workers != 1:
        rates["write-behind, 1 worker"] = peer("write-behind, 1 worker", REPO, 1, args)
    if args.baseline:
        old = Path(tempfile.mkdtemp(prefix="reel-bench-baseline-"))
        try:
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(old)], input=archive, check=True)
            rates[f"per-view transaction ({args.baseline})"] = peer(
                f"per-view transaction ({args.baseline})", old, None, args)
        finally:
            shutil.rmtree(old, ignore_errors=True)
    name, best = next(iter(rates.items()))
    print(f"ratio {name} / bare floor: {best / bare:.2f} (the floor: {bare:,.0f} views/s here"
          f"{'; the 20,000/s goal is above it on this machine' if bare < 20_000 else ''})")
    for other, rate in list(rates.items())[1:]:
        print(f"ratio {name} / {other}: {best / rate:.2f}x")
    print(f"load average {os.getloadavg()[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
