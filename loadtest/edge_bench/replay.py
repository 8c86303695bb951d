"""Replay a Zipf-popular catalog through a cache; how many bytes did the clients get?

    python -m loadtest.edge_bench.replay URL CATALOG_SIZE REQUESTS CONCURRENCY [SEED] [EXPONENT]

Object i (0 = most popular) is /vod/cat/<i>.m4s, asked for with probability ∝ 1/(i+1)^EXPONENT;
the sequence depends only on the seed, so every peer gets the same one. Prints JSON
{"bytes": n, "requests": n, "statuses": {status: n}, "seconds": s}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import sys
import time
from collections import Counter

import aiohttp
import uvloop


def sequence(catalog: int, requests: int, seed: int = 11, exponent: float = 1.1) -> list[int]:
    weights = [1 / (rank + 1) ** exponent for rank in range(catalog)]
    cumulative = list(itertools.accumulate(weights))
    return random.Random(seed).choices(range(catalog), cum_weights=cumulative, k=requests)


async def replay(url: str, order: list[int], concurrency: int) -> dict:
    statuses: Counter[int] = Counter()
    received = 0
    queue = iter(order)
    timeout = aiohttp.ClientTimeout(total=60)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal received
        for index in queue:  # shared iterator: requests go out in order, `concurrency` at a time
            async with http.get(f"{url}/vod/cat/{index}.m4s") as resp:
                statuses[resp.status] += 1
                async for chunk in resp.content.iter_any():
                    received += len(chunk)

    started = time.monotonic()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(concurrency)))
    return {"bytes": received, "requests": len(order), "statuses": statuses,
            "seconds": time.monotonic() - started}


if __name__ == "__main__":
    url, catalog, count, concurrency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    seed = int(sys.argv[5]) if len(sys.argv) > 5 else 11
    exponent = float(sys.argv[6]) if len(sys.argv) > 6 else 1.1
    print(json.dumps(uvloop.run(replay(url, sequence(catalog, count, seed, exponent), concurrency))))
