"""`reel control --workers N` as a user runs it: several processes on one port, on SQLite and on
PostgreSQL; view counts survive a graceful stop whole and a SIGKILL but for the last flush."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.control.conftest import PASSWORD, TOKEN

Start = Callable[..., Awaitable["Control"]]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Control:
    """A `reel control` process (its own process group: a kill takes every worker)."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.port = _port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reel", "control", f"--port={self.port}", *args],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})

    async def ready(self) -> None:
        async with asyncio.timeout(60), aiohttp.ClientSession() as http:
            while True:
                assert self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.1)

    def signal(self, sig: int) -> int:
        os.killpg(self.proc.pid, sig)
        return self.proc.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgresql"])
async def start(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Start]:
    """Start `reel control` (again, on the same data) with extra flags."""
    db = [f"--data={tmp_path / 'data'}"]
    if request.param == "postgresql":
        db.append(f"--db={await request.getfixturevalue('postgres').create_database()}")
    running: list[Control] = []

    async def go(*extra: str) -> Control:
        control = Control([*db, f"--store={tmp_path / 'objects'}", f"--worker-token={TOKEN}",
                           "--rate-ip=0", "--rate-user=0", "--rate-auth=0", *extra],
                          tmp_path / "control.log")
        running.append(control)
        await control.ready()
        return control

    yield go
    for control in running:
        if control.proc.poll() is None:
            control.signal(signal.SIGKILL)


async def _json(resp: aiohttp.ClientResponse, status: int) -> Any:
    assert resp.status == status, await resp.text()
    return await resp.json()


async def _ready_video(http: aiohttp.ClientSession, url: str, title: str) -> tuple[str, dict]:
    email = f"{title}@example.com"
    await http.post(url + "/api/v1/users", json={"email": email, "password": PASSWORD})
    token = (await _json(await http.post(url + "/api/v1/sessions", json={
        "email": email, "password": PASSWORD}), 201))["token"]
    auth = {"Authorization": f"Bearer {token}"}
    form = aiohttp.FormData()
    form.add_field("title", f"{title} clip")
    form.add_field("file", os.urandom(2000), filename="clip.mp4", content_type="video/mp4")
    vid = (await _json(await http.post(url + "/api/v1/videos", data=form, headers=auth),
                       202))["video"]["id"]
    worker = {"Authorization": f"Bearer {TOKEN}"}
    job = (await _json(await http.post(url + "/api/v1/jobs/claim", json={"worker": "w"},
                                       headers=worker), 200))["job"]
    await _json(await http.post(f"{url}/api/v1/jobs/{job['id']}/complete", json={"duration": 3},
                                headers=worker), 200)
    return vid, auth


async def _views(url: str, vid: str, addresses: list[str]) -> list[int]:
    """One view from each loopback address, each on a connection of its own."""
    async def one(address: str) -> int:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.post(f"{url}/api/v1/videos/{vid}/views") as resp:
            return resp.status

    return list(await asyncio.gather(*(one(a) for a in addresses)))


async def _count(http: aiohttp.ClientSession, url: str, vid: str, at_least: int = 0) -> int:
    """The video's merged view count, once it is at least `at_least` (a flush is ~0.5 s away)."""
    async with asyncio.timeout(15):
        while True:
            views = (await _json(await http.get(f"{url}/api/v1/videos/{vid}"), 200))["views"]
            if views >= at_least:
                return views
            await asyncio.sleep(0.1)


async def test_two_workers_serve_the_api(start: Start) -> None:
    """Uploads, jobs, search, live, views and /metrics through a two-worker control."""
    control = await start("--workers=2")
    url = control.url
    async with aiohttp.ClientSession() as http:
        vid, auth = await _ready_video(http, url, "zebra")
        live = await _json(await http.post(url + "/api/v1/live", json={"title": "on air"},
                                           headers=auth), 201)
        assert live["video"]["state"] == "waiting"
        found = await _json(await http.get(url + "/api/v1/search?q=zebra"), 200)
        assert [v["id"] for v in found["items"]] == [vid]
        viewers = [f"127.0.6.{i}" for i in range(1, 41)]
        assert await _views(url, vid, viewers) == [200] * 40
        assert await _views(url, vid, viewers[:10]) == [200] * 10  # repeats, on either worker
        assert await _count(http, url, vid, 40) == 40
        async with http.get(url + "/metrics") as resp:
            text = await resp.text()
        # 50 views over 50 connections spread by the kernel: only the sum of both workers has all.
        accepted = [line for line in text.splitlines()
                    if line.startswith("reel_control_views_accepted_total ")]
        repeats = [line for line in text.splitlines()
                   if line.startswith("reel_control_views_repeat_total ")]
        assert float(accepted[0].split()[1]) + float(repeats[0].split()[1]) == 50
    assert control.signal(signal.SIGTERM) == 0


async def test_views_survive_stops(start: Start) -> None:
    """A graceful stop merges every view; a SIGKILL loses at most those since the last flush."""
    control = await start("--workers=2")
    async with aiohttp.ClientSession() as http:
        vid, _ = await _ready_video(http, control.url, "count")
        assert await _views(control.url, vid, [f"127.0.5.{i}" for i in range(1, 31)]) == [200] * 30
        assert control.signal(signal.SIGTERM) == 0  # at once: well inside a flush interval
        control = await start("--workers=1")
        assert await _count(http, control.url, vid) == 30

        flushed = [f"127.0.4.{i}" for i in range(1, 21)]
        assert await _views(control.url, vid, flushed) == [200] * 20
        assert await _count(http, control.url, vid, 50) == 50  # merged: these must survive
        last = [f"127.0.3.{i}" for i in range(1, 21)]
        assert await _views(control.url, vid, last) == [200] * 20
        control.signal(signal.SIGKILL)
        control = await start("--workers=1")
        after = await _count(http, control.url, vid)
        assert 50 <= after <= 70  # only the last, unflushed, views may be lost
