"""The benchmark's origin: answers every object after a fixed delay, and counts what it sent.

    python -m loadtest.edge_bench.origin PORT [DELAY_SECONDS]

Objects (bodies are made from the path, so every peer sees the same bytes):
  /vod/<id>/index.m3u8          an 829-byte playlist
  /vod/<id>/seg_<n>.m4s         a 2 MiB segment
  /vod/cat/<i>.m4s              catalog object i; its size comes from ?size= or the catalog table
GET /stats  → {"requests": {path: n}, "bytes": n, "heads": {path: [unix time the head was sent]}}
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
from collections import Counter, defaultdict

import uvloop
from aiohttp import web

PLAYLIST_BYTES = 829
SEGMENT_BYTES = 2 * 1024 * 1024


def catalog_sizes(count: int, seed: int = 7) -> list[int]:
    """Segment-like sizes between 256 KiB and 2 MiB, the same for a given seed."""
    sizes = []
    for i in range(count):
        h = int.from_bytes(hashlib.sha256(f"{seed}:{i}".encode()).digest()[:4], "big")
        sizes.append(256 * 1024 + h % (SEGMENT_BYTES - 256 * 1024))
    return sizes


def body_for(path: str, size: int) -> bytes:
    block = hashlib.sha256(path.encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


class Origin:
    def __init__(self, delay: float, catalog: list[int]) -> None:
        self.delay = delay
        self.catalog = catalog
        self.requests: Counter[str] = Counter()
        self.heads: defaultdict[str, list[float]] = defaultdict(list)
        self.bytes = 0
        self._bodies: dict[str, bytes] = {}

    def size_of(self, path: str) -> int | None:
        name = path.rsplit("/", 1)[-1]
        if path.startswith("/vod/cat/") and name.endswith(".m4s") and name[:-4].isdigit():
            index = int(name[:-4])
            return self.catalog[index] if index < len(self.catalog) else None
        if name.endswith(".m3u8"):
            return PLAYLIST_BYTES
        if name.endswith(".m4s"):
            return SEGMENT_BYTES
        return None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        size = self.size_of(path)
        if size is None:
            return web.Response(status=404)
        self.requests[path] += 1
        body = self._bodies.get(path)
        if body is None:
            body = body_for(path, size)
            if len(self._bodies) < 64:  # the hot few; the catalog is made on the fly
                self._bodies[path] = body
        await asyncio.sleep(self.delay)
        kind = "application/vnd.apple.mpegurl" if path.endswith(".m3u8") else "video/iso.segment"
        resp = web.StreamResponse(headers={
            "Content-Type": kind,
            "Cache-Control": "public, max-age=31536000, immutable",
            "ETag": '"' + hashlib.sha256(path.encode()).hexdigest()[:16] + '"',
            "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        })
        resp.content_length = size
        self.heads[path].append(time.time())
        await resp.prepare(request)
        await resp.write(body)
        self.bytes += size
        return resp

    async def stats(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests, "bytes": self.bytes, "heads": self.heads})

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")


async def main(port: int, delay: float, catalog_count: int) -> None:
    origin = Origin(delay, catalog_sizes(catalog_count))
    app = web.Application()
    app.router.add_get("/stats", origin.stats)
    app.router.add_get("/healthz", origin.healthz)
    app.router.add_get("/{path:.*}", origin.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=True)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, backlog=4096).start()
    print(json.dumps({"listening": port}), flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.2,
                    int(sys.argv[3]) if len(sys.argv) > 3 else 0))
