"""A live video's viewer count is the number of players watching it through the edges, however
few of their requests reach the live server: real control, the Ingest service in process, ffmpeg
publishing, `reel origin --live` and a two-worker `reel edge` as processes, and simulated
players reloading the playlist through the edge on several connections at once, so that most are
seen by both workers (some with a CMCD session id, some without).
The API, search and trending show the stream live with that count; it falls to zero when they
leave."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from packager.live.control import IngestControl
from packager.live.ingest import Ingest, Ports
from tests.control.conftest import TOKEN, signup
from tests.live.controlled import live_control, until
from tests.live.publishers import ffmpeg, free_port
from tests.live.test_ingest_class import SMALL

ROOT = Path(__file__).parents[2]
SIDS = 4  # players sending a CMCD session id
PLAIN = 2  # players without CMCD, told apart by their user agents
CONNECTIONS = 3  # per player: all three on one of two workers for a quarter of the players


@pytest.fixture
async def control(tmp_path: Path) -> AsyncIterator[TestClient]:
    async with live_control(tmp_path, heartbeat_seconds=0.5) as client:
        yield client



async def player(url: str, headers: dict[str, str], stop: asyncio.Event) -> None:
    """Reload the playlist as a browser's player does: several requests at once, so on several
    connections, which the edge's SO_REUSEPORT spreads over both its workers."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONNECTIONS),
                                     headers=headers) as http:
        async def get() -> None:
            try:
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
                    await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                pass

        while not stop.is_set():
            await asyncio.gather(*(get() for _ in range(CONNECTIONS)))
            await asyncio.sleep(0.4)


async def test_viewers_through_an_edge_are_counted_once_each(control: TestClient,
                                                             tmp_path: Path) -> None:
    owner = await signup(control, "streamer@example.com")
    made = await (await control.post("/api/v1/live", json={"title": "Harbour cam", "dvr_seconds": 90},
                                     headers=owner)).json()
    vid, key = made["video"]["id"], made["stream_key"]
    store = tmp_path / "store"
    origin_port, edge_port = free_port(), free_port()
    procs: list[Any] = []
    stop = asyncio.Event()
    async with IngestControl(str(control.make_url("/")), TOKEN) as reports:
        ingest = Ingest(reports, str(store), Ports(free_port(), free_port()), config=SMALL)
        await ingest.start()
        try:
            for args in (["origin", f"--store={store}", f"--port={origin_port}",
                          f"--live=http://127.0.0.1:{ingest.ports.http}"],
                         ["edge", "--region=eu", f"--origin=http://127.0.0.1:{origin_port}",
                          f"--port={edge_port}", "--workers=2", "--cache-mb=32"]):
                procs.append(await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "reel", *args, cwd=ROOT, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL))
            procs.append(await ffmpeg(f"rtmp://127.0.0.1:{ingest.rtmp.port}/live/{key}", 120))
            playlist = f"http://127.0.0.1:{edge_port}/live/{vid}/v240/index.m3u8"
            async with aiohttp.ClientSession() as http:
                async def playing() -> bool:
                    try:
                        async with http.get(playlist) as resp:
                            return resp.status == 200
                    except aiohttp.ClientError:
                        return False

                await until(playing, "the playlist through the edge")
            assert ingest.streams[vid].config.dvr_seconds == 90  # the window asked for, wired

            async def video() -> dict:
                return await (await control.get(f"/api/v1/videos/{vid}")).json()

            players = [asyncio.create_task(player(
                f'{playlist}?CMCD=sid%3D%22player-{n}%22', {"User-Agent": "same-browser"}, stop))
                for n in range(SIDS)]
            players += [asyncio.create_task(player(playlist, {"User-Agent": f"browser-{n}"}, stop))
                        for n in range(PLAIN)]
            watching = SIDS + PLAIN

            shown_counts: list[int] = []

            async def counted() -> bool:
                shown_counts.append((await video())["viewers"])
                return shown_counts[-1] == watching

            try:
                await until(counted, f"{watching} viewers")
            except AssertionError as failed:
                raise AssertionError(f"{failed}; shown: {shown_counts[-20:]}") from None
            for _ in range(4):  # and it holds, heartbeat after heartbeat
                await asyncio.sleep(0.5)
                shown = await video()
                assert (shown["live"], shown["viewers"]) == (True, watching)
            found = await (await control.get("/api/v1/search", params={"q": "harbour"})).json()
            assert [(v["id"], v["live"], v["viewers"]) for v in found["items"]] == [
                (vid, True, watching)]
            trending = await (await control.get("/api/v1/trending")).json()
            assert (vid, True, watching) in [(v["id"], v["live"], v["viewers"])
                                             for v in trending["items"]]

            stop.set()
            await asyncio.gather(*players)

            async def nobody() -> bool:
                return (await video())["viewers"] == 0

            await until(nobody, "no viewer once they left")
        finally:
            stop.set()
            for proc in procs:
                if proc.returncode is None:
                    proc.terminate()
                    try:
                        await asyncio.wait_for(proc.wait(), 20)
                    except TimeoutError:
                        proc.kill()
                        await proc.wait()
            await ingest.close()
