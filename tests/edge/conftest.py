"""Real servers on loopback for the edge tests: an origin over a DirectoryStore, and a small
upstream the tests can steer (hold a body at a gate, break it halfway, count requests)."""

from __future__ import annotations

import asyncio
import collections
import json
import socket
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from yarl import URL

import edge.app
import edge.server
import origin.app
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
    go without a Content-Length; paths in `fail` answer that status. A request whose
    If-None-Match names the object's ETag gets 304 (counted in `revalidations`).
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
        self.healthy = True  # what /healthz says (health probes are not counted in `requests`)
        self.probes = 0
        self.fail: dict[str, int] = {}
        self.held: set[str] = set()  # these wait for `release` before their head
        self.release = asyncio.Event()
        self.server: TestServer | None = None  # the upstream fixture's; close it for "origin down"
        self.revalidations: collections.Counter[str] = collections.Counter()

    def add(
        self, path: str, body: bytes, cache_control: str = "public, max-age=60", **extra: str
    ) -> str:
        """Serve `body` at `path`; `extra` adds headers (Age="60", Expires=...)."""
        headers = {
            "Content-Type": "video/iso.segment",
            "Cache-Control": cache_control,
            "ETag": f'"{len(body):x}-{hash(body) & 0xFFFFFF:x}"',
            "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT",
        }
        headers.update(extra)
        self.objects[path] = (body, {k: v for k, v in headers.items() if v})
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
        if path in self.held:
            await self.release.wait()
        if path in self.fail:
            return web.Response(status=self.fail[path], text="upstream trouble")
        if request.headers.get("If-None-Match") == headers.get("ETag"):
            self.revalidations[path] += 1
            kept = {k: v for k, v in headers.items() if k in ("ETag", "Cache-Control", "Last-Modified")}
            return web.Response(status=304, headers=kept)
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

    async def healthz(self, request: web.Request) -> web.Response:
        self.probes += 1
        return web.Response(status=200 if self.healthy else 503)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/{path:.*}", self.handle)
        return app


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[SteerableUpstream, str]]:
    steer = SteerableUpstream()
    server = steer.server = TestServer(steer.app())
    await server.start_server()
    try:
        yield steer, str(server.make_url("")).rstrip("/")
    finally:
        steer.gate.set()
        steer.release.set()
        await server.close()


@pytest.fixture
async def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "store")


@pytest.fixture
async def origin_url(store) -> AsyncIterator[str]:
    server = TestServer(origin.app.make_app(store, region="eu"))
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


class FastClient:
    """What the tests use of aiohttp's TestClient, against an edge served by edge.server (the
    front `reel edge` runs) instead of aiohttp's server."""

    def __init__(self, app: web.Application) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(1024)
        self.host, self.port = self._sock.getsockname()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            edge.server.run(app, None, 0, sockets=(self._sock,), stop=self._stop)
        )
        self.session = aiohttp.ClientSession(base_url=f"http://{self.host}:{self.port}")

    def make_url(self, path: str) -> URL:
        return URL(f"http://{self.host}:{self.port}").join(URL(path))

    def request(self, method: str, path: str, **kw):
        return self.session.request(method, path, **kw)

    def get(self, path: str, **kw):
        return self.session.get(path, **kw)

    def head(self, path: str, **kw):
        return self.session.head(path, **kw)

    def options(self, path: str, **kw):
        return self.session.options(path, **kw)

    def post(self, path: str, **kw):
        return self.session.post(path, **kw)

    async def close(self) -> None:
        await self.session.close()
        self._stop.set()
        await asyncio.wait_for(self._task, 10)
        self._sock.close()


@pytest.fixture(params=["fast", "aiohttp"])
async def make_edge(request) -> AsyncIterator[Callable[..., asyncio.Future]]:
    """make_edge(origins=[...], cache_bytes=..., **kw) -> a client of a real edge, served by the
    edge's own front (as `reel edge` does) or by aiohttp (as make_app's hosts do)."""
    clients: list[TestClient | FastClient] = []

    async def start(origins: list[str], cache_bytes: int = 16 << 20, **kw) -> TestClient | FastClient:
        kw.setdefault("health_interval", 0)  # no probes unless a test wants them
        app = edge.app.make_app(region="eu", origins=origins, cache_bytes=cache_bytes, **kw)
        if request.param == "fast":
            client = FastClient(app)
        else:
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
