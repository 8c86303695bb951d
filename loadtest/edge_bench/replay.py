"""Replay a Zipf-popular catalog through a cache; how many bytes did the clients get?

    python -m loadtest.edge_bench.replay URL CATALOG_SIZE REQUESTS CONCURRENCY [SEED] [EXPONENT]
                                         [--hold NGINX_CACHE_DIR MAX_BYTES]

Object i (0 = most popular) is /vod/cat/<i>.m4s, asked for with probability ∝ 1/(i+1)^EXPONENT;
the sequence depends only on the seed, so every peer gets the same one. Prints JSON
{"bytes": n, "requests": n, "statuses": {status: n}, "seconds": s}.

--hold: start no request while nginx's finished cache files take more than MAX_BYTES: its cache
manager prunes to max_size on its own schedule, and a replay that outran it would measure a
bigger cache than configured.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import aiohttp
import uvloop


def sequence(catalog: int, requests: int, seed: int = 11, exponent: float = 1.1) -> list[int]:
    weights = [1 / (rank + 1) ** exponent for rank in range(catalog)]
    cumulative = list(itertools.accumulate(weights))
    return random.Random(seed).choices(range(catalog), cum_weights=cumulative, k=requests)


def cache_bytes(path: Path) -> int:
    """Bytes nginx's finished cache files under `path` take on disk: what it counts against
    max_size (a file still being written has a suffix, and counts no more than a body reel is
    still fetching counts against its cache)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            if len(name) == 32:  # the key's MD5 in hex
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except FileNotFoundError:
                    pass  # evicted while we looked
    return total


async def hold(path: Path, limit: int, under: asyncio.Event) -> None:
    """Keep `under` set while nginx's cache at `path` is within `limit` bytes."""
    while True:
        if cache_bytes(path) > limit:
            under.clear()
        else:
            under.set()
        await asyncio.sleep(0.005)


async def replay(url: str, order: list[int], concurrency: int, held: tuple[Path, int] | None = None) -> dict:
    statuses: Counter[int] = Counter()
    received = 0
    queue = iter(order)
    timeout = aiohttp.ClientTimeout(total=60)
    under = asyncio.Event()
    under.set()
    holder = asyncio.create_task(hold(*held, under)) if held else None

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal received
        for index in queue:  # shared iterator: requests go out in order, `concurrency` at a time
            await under.wait()
            async with http.get(f"{url}/vod/cat/{index}.m4s") as resp:
                statuses[resp.status] += 1
                async for chunk in resp.content.iter_any():
                    received += len(chunk)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    if holder is not None:
        holder.cancel()
    return {"bytes": received, "requests": len(order), "statuses": statuses,
            "seconds": time.monotonic() - started}


if __name__ == "__main__":
    args, held = sys.argv[1:], None
    if "--hold" in args:
        at = args.index("--hold")
        held = (Path(args[at + 1]), int(args[at + 2]))
        del args[at : at + 3]
    url, catalog, count, concurrency = args[0], int(args[1]), int(args[2]), int(args[3])
    seed = int(args[4]) if len(args) > 4 else 11
    exponent = float(args[5]) if len(args) > 5 else 1.1
    order = sequence(catalog, count, seed, exponent)
    print(json.dumps(uvloop.run(replay(url, order, concurrency, held))))
