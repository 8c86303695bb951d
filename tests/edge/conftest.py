"""Real servers on loopback for the edge tests: an origin over a DirectoryStore, and a small
upstream the tests can steer (hold a body at a gate, break it halfway, count requests)."""

from __future__ import annotations

import asyncio
import collections
import json
import socket
from collections.abc import AsyncIterator, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import edge
import origin
from origin.store import DirectoryStore

VID = "abcdef123"
CHUNK = 64 * 1024


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes in which a shifted or truncated copy would not pass for the original."""
    block = bytes((i * 7 + seed) % 251 for i in range(251))
    return (block * (size // 251 + 1))[:size]


class SteerableUpstream:
    """An HTTP upstream whose objects the test defines.

    Every body goes out as: first chunk, then a wait on `gate` (open unless a test closes it),
    then the rest. Paths in `break_next` are cut off after the first half, once.
    Paths in `stall_head` wait on the gate before even sending the head; paths in `chunked`
    go without a Content-Length.
    """

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, dict[str, str]]] = {}
        self.requests: collections.Counter[str] = collections.Counter()
        self.finished: collections.Counter[str] = collections.Counter()
        self.gate = asyncio.Event()
        self.gate.set()
        self.break_next: set[str] = set()
        self.stall_head: set[str] = set()
        self.chunked: set[str] = set()

    def add(self, path: str, body: bytes, cache_control: str = "public, max-age=60") -> str:
        self.objects[path] = (
            body,
            {
                "Content-Type": "video/iso.segment",
                "Cache-Control": cache_control,
                "ETag": f'"{len(body):x}-{hash(path) & 0xFFFF:x}"',
                "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
            },
        )
        return path

    async def handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if path not in self.objects:
            return web.Response(
                status=404,
                content_type="application/problem+json",
                text=json.dumps({"title": "Not Found", "status": 404}),
            )
        body, headers = self.objects[path]
        if path in self.stall_head:
            await self.gate.wait()
        resp = web.StreamResponse(headers=headers)
        if path in self.chunked:
            resp.enable_chunked_encoding()
        else:
            resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body[:CHUNK])
        await self.gate.wait()
        if path in self.break_next:
            self.break_next.discard(path)
            await resp.write(body[CHUNK : len(body) // 2])
            request.transport.close()
            return resp
        for offset in range(CHUNK, len(body), CHUNK):
            await resp.write(body[offset : offset + CHUNK])
        self.finished[path] += 1
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/{path:.*}", self.handle)
        return app


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[SteerableUpstream, str]]:
    steer = SteerableUpstream()
    server = TestServer(steer.app())
    await server.start_server()
    try:
        yield steer, str(server.make_url("")).rstrip("/")
    finally:
        steer.gate.set()
        await server.close()


@pytest.fixture
async def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


@pytest.fixture
async def origin_url(store) -> AsyncIterator[str]:
    server = TestServer(origin.make_app(store, region="eu"))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
async def make_edge() -> AsyncIterator[Callable[..., asyncio.Future]]:
    """make_edge(origins=[...], cache_bytes=..., **kw) -> a TestClient on a real edge."""
    clients: list[TestClient] = []

    async def start(origins: list[str], cache_bytes: int = 16 << 20, **kw) -> TestClient:
        app = edge.make_app(region="eu", origins=origins, cache_bytes=cache_bytes, **kw)
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


def closed_port_url() -> str:
    """A loopback URL nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


async def metric(client: TestClient, name: str) -> float:
    """The value of one sample line of /metrics (0 when absent)."""
    text = await (await client.get("/metrics")).text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
