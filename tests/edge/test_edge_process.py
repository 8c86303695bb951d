"""`reel edge` as an SRE runs it: a real process on uvloop, one or several workers on one port."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from edge.stats import merge
from tests.edge.conftest import VID, pattern

TOKEN = "purge-me"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


class Edge:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.url = proc, url

    async def get(self, path: str, *, new_connection: bool = True, **kw) -> tuple[int, dict, bytes]:
        """One request; on a fresh connection by default, so SO_REUSEPORT spreads them."""
        connector = aiohttp.TCPConnector(force_close=new_connection)
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.get(self.url + path, **kw) as resp:
                return resp.status, dict(resp.headers), await resp.read()

    async def metric(self, name: str) -> float:
        _, _, body = await self.get("/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture
async def start_edge(tmp_path) -> AsyncIterator[Callable[..., asyncio.Future]]:
    procs: list[subprocess.Popen] = []

    async def start(*args: str) -> Edge:
        port = free_port()
        log = (tmp_path / f"edge-{port}.log").open("wb")  # noqa: ASYNC230 - a local file, once
        proc = subprocess.Popen(  # noqa: ASYNC220 - starting it is quick; we never wait on it here
            [sys.executable, "-m", "reel", "edge", "--region", "eu", "--port", str(port), *args],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        procs.append(proc)
        edge = Edge(proc, f"http://127.0.0.1:{port}")
        for _ in range(150):  # up to 15 s to start
            try:
                if (await edge.get("/healthz"))[0] == 200:
                    return edge
            except aiohttp.ClientError:
                pass
            assert proc.poll() is None, (tmp_path / f"edge-{port}.log").read_text()
            await asyncio.sleep(0.1)
        raise AssertionError("edge did not start")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, 15)
            except subprocess.TimeoutExpired:
                proc.kill()


async def origin_fetches(origin_url: str) -> float:
    async with aiohttp.ClientSession() as http, http.get(origin_url + "/metrics") as resp:
        text = await resp.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("reel_origin_responses_total{") and 'kind="segment"' in line)


async def test_workers_share_the_port_one_origin_fetch_and_purge_and_metrics_reach_all(
    start_edge, origin_url, store
):
    seg = f"vod/{VID}/v360/seg_00001.m4s"
    await store.write_bytes(seg, pattern(50_000))
    edge = await start_edge("--origin", origin_url, "--workers", "2", "--purge-token", TOKEN)
    pids: set[int] = set()
    for _ in range(200):  # the second worker may still be starting; connections find both soon
        pids.add(json.loads((await edge.get("/healthz"))[2])["pid"])
        if len(pids) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(pids) == 2

    async def burst() -> list[str]:
        results = await asyncio.gather(*(edge.get(f"/{seg}") for _ in range(30)))
        assert all(status == 200 and body == pattern(50_000) for status, _, body in results)
        return [headers["X-Cache"] for _, headers, _ in results]

    # Whichever workers the kernel picked: one origin fetch, and one client told MISS (a worker
    # that fetched through the key's owner tells its client what the owner said).
    assert (await burst()).count("MISS") == 1
    assert await origin_fetches(origin_url) == 1
    # Summed over workers, the owner's count includes the request relayed to it, if any.
    assert 1 <= await edge.metric('reel_edge_requests_total{cache="MISS"}') <= 2
    requests = sum([await edge.metric(f'reel_edge_requests_total{{cache="{x}"}}')
                    for x in ("HIT", "MISS", "COALESCED", "STALE")])
    assert 30 <= requests <= 31  # and the fetch relayed to the owner, if there was one
    async with aiohttp.ClientSession() as http, http.post(
        edge.url + "/purge", json={"prefixes": [f"/vod/{VID}/"]}, headers={"Authorization": f"Bearer {TOKEN}"}
    ) as resp:
        assert resp.status == 200
        # From every worker, whichever took the request: the owner's copy, and another
        # worker's if the kernel gave it any of the burst.
        assert 1 <= (await resp.json())["purged"] <= 2
    assert (await burst()).count("MISS") == 1
    assert await origin_fetches(origin_url) == 2

    edge.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(edge.proc.wait, 15) == 0
    for pid in pids:  # no worker left behind
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


async def test_workers_default_to_one_per_cpu_and_metrics_merge_by_meaning(start_edge, origin_url, store):
    seg = f"vod/{VID}/v360/seg_00001.m4s"
    await store.write_bytes(seg, pattern(1000))
    edge = await start_edge("--origin", origin_url)  # no --workers: like nginx's worker_processes auto
    cpus = len(os.sched_getaffinity(0))
    pids: set[int] = set()
    for _ in range(200):
        pids.add(json.loads((await edge.get("/healthz"))[2])["pid"])
        if len(pids) == cpus:
            break
        await asyncio.sleep(0.02)
    assert len(pids) == cpus
    for _ in range(2 * cpus):  # new connections: every worker caches the object once
        status, _, body = await edge.get(f"/{seg}")
        assert status == 200 and body == pattern(1000)
    # Up is one fact about the origin whatever the number of workers; counters add up.
    assert await edge.metric(f'reel_edge_upstream_up{{origin="{origin_url}"}}') == 1
    assert await edge.metric('reel_edge_requests_total{cache="MISS"}') + await edge.metric(
        'reel_edge_requests_total{cache="HIT"}') >= 2 * cpus


def running(pid: int) -> bool:
    """Is `pid` a live process (not gone, not a zombie nobody reaped)?"""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_workers_stop_when_their_supervisor_is_killed(start_edge, origin_url):
    """A killed edge (kill -9, as in a failover drill) leaves no worker serving its port."""
    edge = await start_edge("--origin", origin_url, "--workers", "2")
    pids: set[int] = set()
    for _ in range(200):
        pids.add(json.loads((await edge.get("/healthz"))[2])["pid"])
        if len(pids) == 2:
            break
        await asyncio.sleep(0.02)
    assert len(pids) == 2
    edge.proc.kill()
    for _ in range(100):  # SIGTERM reaches them at once; they stop within their grace period
        if not any(running(pid) for pid in pids):
            break
        await asyncio.sleep(0.1)
    assert not any(running(pid) for pid in pids)
    with pytest.raises(aiohttp.ClientConnectionError):
        await edge.get("/healthz")


def test_merged_metrics_add_counters_and_sizes_but_not_whether_an_upstream_is_up():
    def worker(up: int, hits: int, cached: int) -> str:
        return (
            "# HELP reel_edge_upstream_up 1 while an upstream is considered healthy\n"
            "# TYPE reel_edge_upstream_up gauge\n"
            f'reel_edge_upstream_up{{origin="http://o"}} {up}.0\n'
            "# HELP reel_edge_requests Object requests by cache result\n"
            "# TYPE reel_edge_requests counter\n"
            f'reel_edge_requests_total{{cache="HIT"}} {hits}.0\n'
            "# HELP reel_edge_cache_bytes Bytes held by the cache\n"
            "# TYPE reel_edge_cache_bytes gauge\n"
            f"reel_edge_cache_bytes {cached}.0\n"
        )

    for ups, merged_up in (((1, 1, 1), 1.0), ((0, 1, 0), 1.0), ((0, 0, 0), 0.0)):
        text = merge([worker(up, 10, 1000) for up in ups])
        lines = set(text.splitlines())
        assert f'reel_edge_upstream_up{{origin="http://o"}} {merged_up}' in lines
        assert 'reel_edge_requests_total{cache="HIT"} 30.0' in lines
        assert "reel_edge_cache_bytes 3000.0" in lines


async def test_origins_from_a_regions_file_nearest_first(start_edge, origin_url, store, tmp_path):
    seg = f"vod/{VID}/v360/seg_00001.m4s"
    await store.write_bytes(seg, pattern(1000))
    dead = f"http://127.0.0.1:{free_port()}"
    regions = tmp_path / "regions.toml"
    regions.write_text(
        'default = "far"\n'
        f'[regions.far]\nlat = -33.9\nlon = 151.2\nedges = ["http://e1"]\norigins = ["{dead}"]\n'
        f'[regions.eu]\nlat = 48.9\nlon = 2.4\nedges = ["http://e2"]\norigins = ["{origin_url}"]\n'
    )
    edge = await start_edge("--regions", str(regions))
    status, headers, body = await edge.get(f"/{seg}")
    assert status == 200 and body == pattern(1000)
    assert await edge.metric(f'reel_edge_upstream_errors_total{{origin="{dead}"}}') == 0  # never tried


def test_bad_regions_file_is_a_clean_error(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "reel", "edge", "--region", "mars", "--regions", str(tmp_path / "nope.toml")],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "reel edge:" in result.stderr and "Traceback" not in result.stderr


async def test_memory_stays_near_the_cache_size(start_edge, origin_url, store):
    cache_mib, objects = 32, 96  # three times the cache, so it is full and evicting
    for n in range(objects):
        await store.write_bytes(f"vod/{VID}/v360/seg_{n:05d}.m4s", pattern(1 << 20, n % 251))
    edge = await start_edge("--origin", origin_url, "--cache-mb", str(cache_mib), "--prefetch", "0",
                            "--workers", "1")
    for n in range(3):
        await edge.get(f"/vod/{VID}/v360/seg_{n:05d}.m4s", new_connection=False)
    base = rss_mib(edge.proc.pid)
    async with aiohttp.ClientSession() as http:
        async def fetch(n: int) -> None:
            async with http.get(f"{edge.url}/vod/{VID}/v360/seg_{n:05d}.m4s") as resp:
                assert len(await resp.read()) == 1 << 20

        for _ in range(2):
            for start in range(0, objects, 8):
                await asyncio.gather(*(fetch(n) for n in range(start, start + 8)))
    assert await edge.metric("reel_edge_cache_bytes") > 0.9 * cache_mib * 2**20
    assert rss_mib(edge.proc.pid) <= base + 1.15 * cache_mib


async def test_healthz_reports_client_connections_for_geo(start_edge, origin_url) -> None:
    """geo prefers the least loaded of equally near edges: /healthz says how many clients hold
    connections to this edge (the probe's own included)."""
    edge = await start_edge("--origin", origin_url, "--workers", "1")
    _, _, body = await edge.get("/healthz")
    assert json.loads(body)["load"] == {"connections": 1, "requests": 1}
    idle = [await asyncio.open_connection("127.0.0.1", int(edge.url.rsplit(":", 1)[1]))
            for _ in range(3)]
    try:
        for _ in range(50):  # the edge has accepted them once it counts them
            _, _, body = await edge.get("/healthz")
            if json.loads(body)["load"]["connections"] == 4:
                break
            await asyncio.sleep(0.05)
        assert json.loads(body)["load"] == {"connections": 4, "requests": 1}
    finally:
        for _, writer in idle:
            writer.close()


async def test_workers_count_a_live_upstream_request_once_whichever_worker_took_the_viewers(start_edge):
    """reel_edge_live_upstream_requests_total, summed over workers, is what reached the origin:
    a worker that fetched through the key's owner does not count the owner's fetch again."""
    from tests.edge.test_edge_live import PLAYLIST, LiveUpstream, serve

    upstream = LiveUpstream()
    server = await serve(upstream)
    try:
        edge = await start_edge("--origin", str(server.make_url("")).rstrip("/"), "--workers", "2")
        query = "?_HLS_msn=5&_HLS_part=1"
        waiters = [asyncio.create_task(edge.get(PLAYLIST + query)) for _ in range(30)]
        async with asyncio.timeout(15):
            while not upstream.queries:
                upstream.arrived.clear()
                await upstream.arrived.wait()
        await asyncio.sleep(0.5)  # the other viewers, on both workers, join the fetch
        upstream.release.set()
        answers = await asyncio.wait_for(asyncio.gather(*waiters), 15)
        assert all(status == 200 for status, _, _ in answers)
        assert upstream.queries["_HLS_msn=5&_HLS_part=1"] == 1
        assert await edge.metric('reel_edge_live_upstream_requests_total{kind="blocking_playlist"}') == 1
    finally:
        await server.close()
