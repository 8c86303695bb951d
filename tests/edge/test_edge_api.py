"""`/api/v1/` through edges in front of a real control: public reads cached and coalesced, the
rest passed through; edits seen through every edge; control down answered as a problem."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

import edge.app
from control.app import make_app as make_control
from control.ratelimit import Rate, RateLimits
from origin.store import DirectoryStore
from tests.control.conftest import FAST_HASHER, GEO, TOKEN, form, signup
from tests.edge.conftest import FastClient, closed_port_url

SECRET = "edge-secret"
PURGE = "purge-token"
MAX_AGE, SWR = 1, 3  # control's; the edges follow what it says


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Stack:
    """Control and two edges in front of it (control purges both)."""

    def __init__(self, control: TestClient, edges: list[FastClient]) -> None:
        self.control, self.edges = control, edges

    async def control_requests(self, route: str, status: str = "200") -> float:
        """How many GETs of `route` control answered with `status` (its own metrics)."""
        text = await (await self.control.get("/metrics")).text()
        total = 0.0
        for line in text.splitlines():
            if (line.startswith("reel_control_request_seconds_count{") and f'route="{route}"' in line
                    and 'method="GET"' in line and f'status="{status}"' in line):
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Any]:
    started: list[Any] = []

    async def start(rate_limits: RateLimits | None = None, control_url: str | None = None) -> Stack:
        port = free_port()
        url = control_url or f"http://127.0.0.1:{port}"
        edges = [FastClient(edge.app.make_app(region="eu", origins=[closed_port_url()], cache_bytes=8 << 20,
                                              health_interval=0, purge_token=PURGE, control=url,
                                              control_secret=SECRET))
                 for _ in range(2)]
        started.extend(edges)
        app = make_control(tmp_path / "data", DirectoryStore(tmp_path / "objects"), GEO, TOKEN, 1 << 20,
                           password_hasher=FAST_HASHER, rate_limits=rate_limits or RateLimits.off(),
                           edges=[f"http://{e.host}:{e.port}" for e in edges], purge_token=PURGE,
                           edge_secret=SECRET, api_max_age=MAX_AGE)
        control = TestClient(TestServer(app, host="127.0.0.1", port=port))
        await control.start_server()
        started.append(control)
        return Stack(control, edges)

    yield start
    for client in reversed(started):
        await client.close()


async def upload(control: TestClient, auth: dict[str, str], title: str = "Hot clip", **fields: str) -> str:
    fd = form(os.urandom(1000), title)
    for name, value in fields.items():
        fd.add_field(name, value)
    resp = await control.post("/api/v1/videos", data=fd, headers=auth)
    assert resp.status == 202, await resp.text()
    return (await resp.json())["video"]["id"]


async def read(client: FastClient, path: str, **kw: Any) -> tuple[int, Any, Any]:
    async with client.get(path, **kw) as resp:
        body = await resp.json(content_type=None) if resp.status != 304 else None
        return resp.status, resp.headers.copy(), body


async def until(check, seconds: float) -> float:  # type: ignore[no-untyped-def]
    """Poll `check()` until true; how long it took. Fails after `seconds`."""
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < seconds, "not seen in time"
        await asyncio.sleep(0.1)
    return time.monotonic() - started


async def test_a_hot_public_read_is_one_control_request_per_edge(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack()
    alice = await signup(s.control, "alice@example.com")
    video_id = await upload(s.control, alice)
    path = f"/api/v1/videos/{video_id}"
    answers = await asyncio.gather(*(read(s.edges[0], path) for _ in range(50)))
    assert {status for status, _, _ in answers} == {200}
    assert {body["title"] for _, _, body in answers} == {"Hot clip"}
    caches = sorted(headers["X-Cache"] for _, headers, _ in answers)
    assert caches.count("MISS") == 1 and set(caches) <= {"MISS", "COALESCED", "HIT"}
    _, headers, _ = answers[0]
    assert headers["Cache-Control"].startswith(f"public, max-age={MAX_AGE}")
    assert "stale-while-revalidate" in headers["Cache-Control"]
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert await s.control_requests("/api/v1/videos/{video_id}") == 1
    # a conditional request: 304 from the edge's copy, and from control itself
    status, headers304, _ = await read(s.edges[0], path, headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and headers304["ETag"] == headers["ETag"]
    resp = await s.control.get(path, headers={"If-None-Match": headers["ETag"]})
    assert resp.status == 304
    # the other edge has its own copy: one more request
    await read(s.edges[1], path)
    assert await s.control_requests("/api/v1/videos/{video_id}") == 2


async def test_signed_in_cookies_and_writes_are_never_shared(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack()
    alice = await signup(s.control, "alice@example.com")
    secret_id = await upload(s.control, alice, title="Alice only", privacy="private")
    path = f"/api/v1/videos/{secret_id}"
    edge0 = s.edges[0]
    status, headers, body = await read(edge0, path, headers=alice)
    assert status == 200 and body["title"] == "Alice only"
    assert "private" in headers["Cache-Control"] and headers["X-Cache"] == "MISS"
    # nobody else gets alice's answer, even while it is fresh
    status, headers, body = await read(edge0, path)
    assert status == 404 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 404
    # signed-in and cookie requests of a public video each go to control
    public_id = await upload(s.control, alice, title="Public")
    for extra in (alice, alice, {"Cookie": "a=b"}, {"Cookie": "a=b"}):
        status, headers, _ = await read(edge0, f"/api/v1/videos/{public_id}", headers=extra)
        assert status == 200 and headers["X-Cache"] == "MISS"
    assert await s.control_requests("/api/v1/videos/{video_id}") == 1 + 4  # alice's, then these
    # writes pass through with their bodies; control's problems come back as they are
    async with edge0.post(f"/api/v1/videos/{public_id}/comments", json={"text": "first!"},
                          headers=alice) as resp:
        assert resp.status == 201, await resp.text()
    async with edge0.post(f"/api/v1/videos/{public_id}/comments", json={"text": "x"}) as resp:
        assert resp.status == 401 and resp.headers["Content-Type"].startswith("application/problem+json")
        assert "WWW-Authenticate" in resp.headers or (await resp.json(content_type=None))["status"] == 401
    async with edge0.request("PATCH", f"/api/v1/videos/{public_id}", json={"title": ""},
                             headers=alice) as resp:
        assert resp.status == 400 and (await resp.json(content_type=None))["status"] == 400
    async with edge0.post(f"/api/v1/videos/{public_id}/comments", data=b"x" * (2 << 20),
                          headers=alice) as resp:
        assert resp.status == 413
    async with edge0.request("DELETE", f"/api/v1/videos/{public_id}", headers=alice) as resp:
        assert resp.status == 204


async def test_edits_show_through_every_edge(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack()
    alice = await signup(s.control, "alice@example.com")
    bob = await signup(s.control, "bob@example.com")
    video_id = await upload(s.control, alice, title="Before")
    path = f"/api/v1/videos/{video_id}"
    for e in s.edges:  # cached on both edges
        assert (await read(e, path))[2]["title"] == "Before"
        assert (await read(e, path + "/comments"))[2]["items"] == []

    resp = await s.control.patch(path, json={"title": "After"}, headers=alice)
    assert resp.status == 200
    for e in s.edges:  # purged: the next read is the new title, at once
        assert (await read(e, path))[2]["title"] == "After"

    resp = await s.control.post(path + "/comments", json={"text": "hello"}, headers=bob)
    assert resp.status == 201

    async def comment_everywhere() -> bool:
        pages = [(await read(e, path + "/comments"))[2] for e in s.edges]
        return all([c["text"] for c in page["items"]] == ["hello"] for page in pages)

    # a new comment is not purged for: it shows once the copies expire (max-age, plus one
    # stale answer while refreshing), with a margin for a loaded machine
    await until(comment_everywhere, MAX_AGE + SWR + 5)

    resp = await s.control.patch(path, json={"privacy": "private"}, headers=alice)
    assert resp.status == 200
    for e in s.edges:  # private at once: no edge serves the copy it had
        status, _, _ = await read(e, path)
        assert status == 404
        assert (await read(e, path + "/comments"))[0] == 404
        assert (await read(e, path, headers=alice))[2]["title"] == "After"  # its owner sees it

    await s.control.patch(path, json={"privacy": "public"}, headers=alice)
    assert (await read(s.edges[0], path))[0] == 200
    assert (await s.control.delete(path, headers=alice)).status == 204
    for e in s.edges:
        assert (await read(e, path))[0] == 404


async def test_clients_are_throttled_one_by_one_through_the_edge(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack(rate_limits=RateLimits(per_ip=Rate(0.01, 4)))
    alice = await signup(s.control, "alice@example.com")  # not through the edge
    video_id = await upload(s.control, alice)
    edge0 = s.edges[0]

    async def views(address: str, count: int) -> list[int]:
        """`count` anonymous views (not shared: a POST) from a client at `address`."""
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            statuses = []
            for _ in range(count):
                async with http.post(f"http://{edge0.host}:{edge0.port}/api/v1/videos/{video_id}/views",
                                     headers={"X-Forwarded-For": "203.0.113.9"}) as resp:
                    statuses.append(resp.status)
            return statuses

    assert await views("127.0.0.2", 6) == [200] * 4 + [429] * 2
    assert await views("127.0.0.3", 4) == [200] * 4  # its own bucket, whatever it claims to be


async def test_control_unreachable_is_a_problem_or_a_stale_copy(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    s = await stack(control_url=closed_port_url())
    status, headers, body = await read(s.edges[0], "/api/v1/trending")
    assert status == 502 and headers["Content-Type"].startswith("application/problem+json")
    assert body["status"] == 502
    async with s.edges[0].post("/api/v1/users", json={}) as resp:
        assert resp.status == 502

    s = await stack()
    assert (await read(s.edges[0], "/api/v1/trending"))[0] == 200
    await s.control.close()
    await asyncio.sleep(MAX_AGE + 0.2)  # expired: within stale-if-error, the copy stands in
    status, headers, _ = await read(s.edges[0], "/api/v1/trending")
    assert status == 200 and headers["X-Cache"] == "STALE"


async def test_a_shared_fetch_is_charged_to_the_client_that_missed(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack(rate_limits=RateLimits(per_ip=Rate(0.01, 3)))
    edge0 = s.edges[0]

    async def searches(address: str, words: list[str]) -> list[int]:
        connector = aiohttp.TCPConnector(local_addr=(address, 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            statuses = []
            for word in words:
                async with http.get(f"http://{edge0.host}:{edge0.port}/api/v1/search?q={word}") as resp:
                    statuses.append(resp.status)
            return statuses

    # every search is a miss (a key of its own): each costs its client a token at control
    assert await searches("127.0.0.2", ["a", "b", "c", "d"]) == [200, 200, 200, 429]
    assert await searches("127.0.0.3", ["e", "f", "g"]) == [200, 200, 200]
    # what 127.0.0.2 had fetched is shared with anyone, whatever their own bucket holds
    assert await searches("127.0.0.3", ["a", "b", "c"]) == [200, 200, 200]


async def test_waiters_never_get_an_answer_meant_for_the_leader() -> None:
    """A shared fetch answered 429 (the leading client's bucket was empty): those who waited on
    it ask control themselves, and are answered for themselves."""
    from aiohttp import web

    from tests.edge.conftest import metric

    asked: list[str] = []
    release = asyncio.Event()

    async def trending(request: web.Request) -> web.Response:
        asked.append(request.headers.get("X-Forwarded-For", ""))
        if len(asked) == 1:
            await release.wait()
            return web.json_response({"status": 429}, status=429, headers={"Retry-After": "9"},
                                     content_type="application/problem+json")
        return web.json_response({"items": []}, headers={"Cache-Control": "public, max-age=60"})

    app = web.Application()
    app.router.add_get("/api/v1/trending", trending)
    control = TestServer(app, host="127.0.0.1")
    await control.start_server()
    edge0 = FastClient(edge.app.make_app(region="eu", origins=[closed_port_url()], cache_bytes=8 << 20,
                                         health_interval=0, control=str(control.make_url("")).rstrip("/"),
                                         control_secret=SECRET))
    try:
        leader = asyncio.create_task(read(edge0, "/api/v1/trending"))
        await until(lambda: asyncio.sleep(0, bool(asked)), 10)
        follower = asyncio.create_task(read(edge0, "/api/v1/trending"))

        async def both_waiting() -> bool:
            return await metric(edge0, "reel_edge_api_inflight_readers") == 2

        await until(both_waiting, 10)
        release.set()
        status, headers, _ = await leader
        assert status == 429 and headers["Retry-After"] == "9"
        status, headers, body = await follower
        assert status == 200 and body == {"items": []} and headers["X-Cache"] == "MISS"
        assert len(asked) == 2 and all(a.endswith("127.0.0.1") for a in asked)
    finally:
        release.set()
        await edge0.close()
        await control.close()


async def test_a_body_behind_expect_100_continue_is_asked_for(stack) -> None:  # type: ignore[no-untyped-def]
    s = await stack()
    edge0 = s.edges[0]
    body = b'{"email": "carol@example.com", "password": "correct horse battery"}'
    reader, writer = await asyncio.open_connection(edge0.host, edge0.port)
    try:
        writer.write(b"POST /api/v1/users HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\n"
                     b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
        await writer.drain()
        interim = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        assert interim.startswith(b"HTTP/1.1 100 Continue")
        writer.write(body)
        await writer.drain()
        final = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert final.startswith(b"HTTP/1.1 201"), final
    finally:
        writer.close()
