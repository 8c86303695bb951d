"""LL-HLS through the edge: a live playlist's blocking-reload directives are part of its key and
go upstream, so viewers waiting on the same part share one upstream request (issue 15)."""

from __future__ import annotations

import asyncio
import collections
import socket
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from edge.http import blocking_query, key_of_target

PLAYLIST = "/live/live0001/v360/index.m3u8"


def test_blocking_directives_are_normalised_into_the_key() -> None:
    assert key_of_target(PLAYLIST) == PLAYLIST[1:]
    assert key_of_target(PLAYLIST + "?_HLS_part=02&_HLS_msn=0012&CMCD=sid%3D1") == \
        PLAYLIST[1:] + "?_HLS_msn=12&_HLS_part=2"
    assert key_of_target(PLAYLIST + "?_HLS_msn=3&_HLS_skip=YES") == PLAYLIST[1:] + "?_HLS_msn=3&_HLS_skip=YES"
    assert key_of_target("/live/live0001/v360/part_00001_0.m4s?_HLS_msn=1") == \
        "live/live0001/v360/part_00001_0.m4s"  # only playlists block
    assert key_of_target("/vod/abcdef1/v360/index.m3u8?_HLS_msn=1") == "vod/abcdef1/v360/index.m3u8"
    assert blocking_query("_HLS_msn=1&_HLS_msn=2") == "?_HLS_msn=1"
    assert blocking_query("_HLS_msn=%3Cx%3E") == "?_HLS_msn=%3Cx%3E"  # passed on, for a 400 upstream


class LiveUpstream:
    """Holds every blocking request until `release`, then answers with the query it got."""

    def __init__(self) -> None:
        self.queries: collections.Counter[str] = collections.Counter()
        self.release = asyncio.Event()
        self.arrived = asyncio.Event()  # set at every request
        self.not_ready = False  # answer blocking requests 503, as a stalled stream does

    async def handle(self, request: web.Request) -> web.Response:
        self.queries[request.query_string] += 1
        self.arrived.set()
        if self.not_ready:
            return web.Response(status=503, text="{}", headers={
                "Content-Type": "application/problem+json", "Retry-After": "1"})
        if "_HLS_msn" in request.query:
            await self.release.wait()
        return web.Response(text=f"#EXTM3U\n# {request.query_string}\n", headers={
            "Content-Type": "application/vnd.apple.mpegurl",
            "Cache-Control": "public, max-age=1" if request.query_string else "public, max-age=0"})


async def serve(upstream: LiveUpstream) -> TestServer:
    app = web.Application()
    app.router.add_get("/{path:.*}", upstream.handle)
    server = TestServer(app)
    await server.start_server()
    return server


@pytest.fixture
async def live_upstream() -> AsyncIterator[tuple[LiveUpstream, str]]:
    upstream = LiveUpstream()
    server = await serve(upstream)
    try:
        yield upstream, str(server.make_url("")).rstrip("/")
    finally:
        upstream.release.set()
        await server.close()


async def test_identical_blocking_reloads_make_one_upstream_request(make_edge, live_upstream) -> None:
    upstream, url = live_upstream
    client = await make_edge([url])

    async def get(query: str) -> tuple[str, str, str]:
        async with client.get(PLAYLIST + query) as resp:
            assert resp.status == 200
            return await resp.text(), resp.headers["X-Cache"], resp.headers["Age"]

    spellings = ["?_HLS_msn=12&_HLS_part=2", "?_HLS_part=2&_HLS_msn=12", "?_HLS_msn=012&_HLS_part=2"]
    waiters = [asyncio.create_task(get(spellings[i % 3])) for i in range(30)]
    other = asyncio.create_task(get("?_HLS_msn=12&_HLS_part=3"))
    async with asyncio.timeout(10):
        while sum(upstream.queries.values()) < 2:  # both fetches reached the upstream
            upstream.arrived.clear()
            await upstream.arrived.wait()
    await asyncio.sleep(0.2)  # the other viewers join the fetch (any that come later: a HIT)
    upstream.release.set()
    answers = await asyncio.wait_for(asyncio.gather(*waiters), 10)
    assert upstream.queries["_HLS_msn=12&_HLS_part=2"] == 1
    assert all(text.endswith("# _HLS_msn=12&_HLS_part=2\n") for text, _, _ in answers)
    verdicts = collections.Counter(x for _, x, _ in answers)
    assert verdicts["MISS"] == 1 and verdicts["COALESCED"] + verdicts["HIT"] == 29
    assert (await other)[0].endswith("# _HLS_msn=12&_HLS_part=3\n")

    text, x_cache, age = await get("?_HLS_part=2&_HLS_msn=12")  # cached briefly (max-age=1)
    assert x_cache == "HIT" and int(age) <= 1
    assert upstream.queries["_HLS_msn=12&_HLS_part=2"] == 1
    plain = await get("")  # a plain reload is a key of its own
    assert plain[0].endswith("# \n") and upstream.queries[""] == 1


async def test_a_part_not_ready_is_the_streams_answer_not_a_failing_origin(make_edge, live_upstream) -> None:
    upstream, url = live_upstream
    upstream.not_ready = True
    other = LiveUpstream()
    server = await serve(other)
    try:
        client = await make_edge([url, str(server.make_url("")).rstrip("/")])
        for msn in range(5):  # more than the failures that take an origin down
            async with client.get(f"{PLAYLIST}?_HLS_msn={msn}") as resp:
                assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        assert sum(other.queries.values()) == 0  # no failover: every origin would say the same
        health = await (await client.get("/healthz")).json()
        assert health["upstreams"][url] is True
    finally:
        await server.close()


async def test_a_held_reload_outwaits_a_busy_origins_full_accept_queue(make_edge) -> None:
    """A busy origin's full accept queue drops SYNs, which the kernel resends after 1 s, then
    3 s: a blocking reload waits for that (its viewer gets the playlist), where a VOD fetch
    still gives up after connect_timeout (and fails over, were there another origin)."""
    upstream = LiveUpstream()
    upstream.release.set()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    address = listener.getsockname()
    fillers = []
    for _ in range(2):  # never accepted: the queue (backlog 0) is full from here on
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(address)
        fillers.append(filler)
    app = web.Application()
    app.router.add_get("/{path:.*}", upstream.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        client = await make_edge([f"http://{address[0]}:{address[1]}"], connect_timeout=1.0)
        async with client.get("/vod/abcdef1/v360/seg_00001.m4s") as resp:
            assert resp.status == 504
        assert sum(upstream.queries.values()) == 0

        async def catch_up() -> None:  # after the first resent SYN was dropped too
            await asyncio.sleep(1.5)
            await web.SockSite(runner, listener).start()  # listens again with a longer queue

        caught_up = asyncio.create_task(catch_up())
        async with client.get(PLAYLIST + "?_HLS_msn=7&_HLS_part=1") as resp:
            assert resp.status == 200
            assert (await resp.text()).endswith("# _HLS_msn=7&_HLS_part=1\n")
        await caught_up
    finally:
        for filler in fillers:
            filler.close()
        await runner.cleanup()
        listener.close()
