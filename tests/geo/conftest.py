"""Shared fixtures for geo tests: a real City database and real edge servers on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiohttp import web

from reel.playback_token import ACCESS_HEADER, split_path
from tests.geo.mmdb import build_city_db

LONDON = "81.2.69.142"
LONDON_V6 = "2a02:8010::1"
SYDNEY = "1.128.0.1"
NEW_YORK = "3.0.0.1"
NOT_IN_DB = "8.8.8.8"

PLACES = {
    "81.2.69.0/24": (51.5142, -0.0931, "GB", "London"),
    "2a02:8010::/32": (51.5142, -0.0931, "GB", "London"),
    "1.128.0.0/11": (-33.8591, 151.2002, "AU", "Sydney"),
    "3.0.0.0/15": (40.7128, -74.0060, "US", "New York"),
}


class EdgeServer:
    """A tiny real edge: /healthz, whose answer the test controls (ok | fail | hang) and which
    reports `load` client connections when set, and /vod/... from `objects` (counted)."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.load: int | None = None
        self.objects: dict[str, bytes] = {}
        self.guarded: set[str] = set()  # answered with X-Reel-Access, as a private video's are
        self.requests: list[str] = []
        self.port = 0
        self._release = asyncio.Event()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _healthz(self, request: web.Request) -> web.Response:
        if self.mode == "hang":
            await self._release.wait()
        if self.mode != "ok":
            return web.json_response({"status": "failing"}, status=503)
        if self.load is None:
            return web.json_response({"status": "ok"})
        return web.json_response({"status": "ok", "load": {"connections": self.load}})

    async def _object(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        path = split_path(request.path)[0]  # a playback token is no part of the object's name
        if path not in self.objects:
            return web.json_response({"status": 404}, status=404)
        marked = {ACCESS_HEADER: "private"} if path in self.guarded else None
        return web.Response(body=self.objects[path], headers=marked,
                            content_type="application/vnd.apple.mpegurl")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/vod/{path:.*}", self._object)
        self._release.clear()
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        # Port 0 the first time; the same port again on restart.
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


@pytest.fixture
async def edges() -> dict[str, EdgeServer]:
    servers = {name: EdgeServer() for name in ("eu1", "eu2", "fra", "us", "ap")}
    for server in servers.values():
        await server.start()
    yield servers
    for server in servers.values():
        await server.stop()


@pytest.fixture
def regions_file(tmp_path: Path, edges: dict[str, EdgeServer]) -> Path:
    path = tmp_path / "regions.toml"
    path.write_text(f"""\
default = "us-east"            # region for clients we cannot place

[regions.eu-west]
lat = 51.51
lon = -0.13
edges = ["{edges['eu1'].url}", "{edges['eu2'].url}/"]
origins = ["http://127.0.0.1:1"]

[regions.eu-central]
lat = 50.11
lon = 8.68
edges = ["{edges['fra'].url}"]
origins = ["http://127.0.0.1:1"]

[regions.us-east]
lat = 40.71
lon = -74.01
edges = ["{edges['us'].url}"]
origins = ["http://127.0.0.1:2"]

[regions.ap-southeast]
lat = -33.87
lon = 151.21
edges = ["{edges['ap'].url}"]
origins = ["http://127.0.0.1:3"]
""")
    return path


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    return build_city_db(tmp_path / "city.mmdb", PLACES)
