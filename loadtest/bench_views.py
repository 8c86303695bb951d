"""View-count benchmark: POST /api/v1/videos/{id}/views from many distinct signed-in viewers.

    python -m loadtest.bench_views [--viewers 30000] [--videos 4] [--workers 0] [--baseline REV]

Peers, in the same run, each on a fresh SQLite database filled the same way: `reel control
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
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
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
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                time.sleep(1.0)  # every worker up, not just the first
                return proc
        except OSError:
            time.sleep(0.1)
    stop(proc)
    raise SystemExit("reel control did not start")


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


async def _load(base: str, work: list[tuple[str, str]], connections: int) -> tuple[int, int]:
    """Send every (video, token) view; 503s are sent again after their Retry-After. Returns
    (accepted, refused)."""
    accepted = refused = 0
    todo = iter(work)
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def client() -> None:
            nonlocal accepted, refused
            for video, token in todo:
                while True:
                    async with http.post(f"{base}/api/v1/videos/{video}/views",
                                         headers={"Authorization": f"Bearer {token}"}) as resp:
                        await resp.read()
                        if resp.status == 200:
                            accepted += 1
                            break
                        if resp.status != 503:
                            raise SystemExit(f"view: {resp.status} {await resp.text()}")
                        refused += 1
                        await asyncio.sleep(float(resp.headers.get("Retry-After", "1")))

        await asyncio.gather(*(client() for _ in range(connections)))
    return accepted, refused


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
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    results = [out.get() for _ in procs]
    seconds = time.perf_counter() - start
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
    args = parser.parse_args()
    workers = args.workers or len(os.sched_getaffinity(0))
    print(f"{args.viewers} viewers x {args.videos} videos, {args.clients} load processes x "
          f"{args.connections} connections, {os.cpu_count()} CPUs", flush=True)
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
    best = next(iter(rates.values()))
    for name, rate in list(rates.items())[1:]:
        print(f"ratio {next(iter(rates))} / {name}: {best / rate:.2f}x")


if __name__ == "__main__":
    main()
