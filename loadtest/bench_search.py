"""Search benchmark: 1,000,000 generated videos, 1-3 word queries at the API, p50/p99.

    python -m loadtest.bench_search --data /tmp/reel-bench [--videos 1000000] [--queries 3000]

It runs `reel control` once to create the schema, fills `videos` with plain SQL (the schema's
triggers index them; loadtest imports nothing of reel), then starts `reel control` on that data and
times GET /api/v1/search over HTTP with a few concurrent clients. The fill is kept between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

SYLLABLES = ["ka", "lo", "mi", "ne", "ra", "tu", "vi", "so", "pe", "da", "ri", "zu", "fa", "go",
             "be", "xi", "mo", "na", "te", "lu", "ché", "rè", "ño", "ü"]
REAL = ["music", "cat", "dog", "travel", "paris", "café", "crème", "brûlée", "guitar", "lesson",
        "tutorial", "review", "gaming", "live", "news", "football", "recipe", "cooking", "vlog",
        "sunset", "timelapse", "drone", "mountain", "beach", "dance", "piano", "workout", "yoga",
        "science", "space", "history", "comedy", "trailer", "unboxing", "minecraft", "how"]


def vocabulary(rng: random.Random, size: int) -> list[str]:
    words = set(REAL)
    while len(words) < size:
        words.add("".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 4))))
    ordered = list(words)
    rng.shuffle(ordered)
    return ordered


def zipf_cumulative(n: int, s: float = 1.0) -> list[float]:
    """Cumulative Zipf weights (random.choices recomputes them on every call otherwise)."""
    return list(itertools.accumulate(1 / (rank ** s) for rank in range(1, n + 1)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_control(data: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reel", "control", "--data", str(data), "--store",
         str(data / "objects"), "--port", str(port), "--worker-token", "bench",
         "--rate-ip", "0", "--rate-user", "0"],  # the clients all come from 127.0.0.1
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("reel control did not start")


def fill(db_path: Path, count: int, words: list[str], weights: list[float], seed: int) -> None:
    conn = sqlite3.connect(db_path, isolation_level=None)
    have = conn.execute("SELECT count(*) FROM videos").fetchone()[0]
    if have >= count:
        print(f"{have} videos already there", flush=True)
        return
    rng = random.Random(seed + have)
    owners = [f"benchuser{i:05d}" for i in range(2000)]
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT OR IGNORE INTO users (id, email, name, password_hash, created_at, updated_at)"
        " VALUES (?, ?, ?, 'x', 0, 0)", [(o, f"{o}@bench.invalid", o) for o in owners])
    conn.execute("COMMIT")
    start = time.monotonic()
    batch = 20_000
    t0 = 1.6e9
    for base in range(have, count, batch):
        rows = []
        for i in range(base, min(count, base + batch)):
            title = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(3, 8))).capitalize()
            desc = " ".join(rng.choices(words, cum_weights=weights, k=rng.randint(8, 30)))
            tags = json.dumps(rng.choices(words, cum_weights=weights, k=rng.randint(1, 5)))
            rows.append((f"bench{i:09d}", title, desc, tags, rng.choice(owners),
                         round(rng.uniform(5, 3600), 1), t0 + i * 30))
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at,"
            " description, tags, owner_id, duration, privacy)"
            " VALUES (?1, ?2, 'ready', 0, ?7, ?7, ?3, ?4, ?5, ?6, 'public')", rows)
        conn.execute("COMMIT")
        done = min(count, base + batch)
        print(f"\rfilled {done}/{count} ({time.monotonic() - start:.0f} s)", end="", flush=True)
    print()
    conn.execute("INSERT INTO videos_fts (videos_fts) VALUES ('optimize')")
    conn.close()


def queries(rng: random.Random, words: list[str], weights: list[float], n: int) -> list[str]:
    out = []
    for _ in range(n):
        terms = rng.choices(words, cum_weights=weights, k=rng.choice((1, 2, 3)))
        if rng.random() < 0.3:  # as-you-type: the last word is still being typed
            terms[-1] = terms[-1][: max(2, len(terms[-1]) - rng.randint(1, 3))]
        out.append(" ".join(terms))
    return out


async def measure(base: str, qs: list[str], concurrency: int) -> list[float]:
    times: list[float] = []
    todo = iter(qs)
    async with aiohttp.ClientSession() as http:
        async def client() -> None:
            for q in todo:
                start = time.perf_counter()
                async with http.get(f"{base}/api/v1/search", params={"q": q}) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise SystemExit(f"{q!r}: {resp.status}")
                times.append(time.perf_counter() - start)

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--videos", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--vocabulary", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.data.mkdir(parents=True, exist_ok=True)
    rng = random.Random(args.seed)
    words = vocabulary(rng, args.vocabulary)
    weights = zipf_cumulative(len(words))

    port = free_port()
    proc = start_control(args.data, port)  # creates and migrates the database
    proc.terminate()
    proc.wait()
    fill(args.data / "control.sqlite3", args.videos, words, weights, args.seed)

    proc = start_control(args.data, port)
    try:
        base = f"http://127.0.0.1:{port}"
        asyncio.run(measure(base, queries(rng, words, weights, 200), args.concurrency))  # warm
        times = asyncio.run(measure(base, queries(rng, words, weights, args.queries),
                                    args.concurrency))
    finally:
        proc.terminate()
        proc.wait()
    times.sort()
    p = lambda q: times[min(len(times) - 1, int(q * len(times)))] * 1000  # noqa: E731
    print(f"{len(times)} queries over {args.videos} videos, {args.concurrency} clients: "
          f"p50 {p(0.50):.1f} ms, p90 {p(0.90):.1f} ms, p99 {p(0.99):.1f} ms, "
          f"mean {statistics.mean(times) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
