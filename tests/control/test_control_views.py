"""View counts, write-behind: accepted at once, merged in batches, exact across processes."""

from __future__ import annotations

import asyncio

import aiohttp
from aiohttp.test_utils import TestClient

from tests.control.conftest import MakeClient, signup
from tests.control.test_control_social import _merged, _ready


async def _view(client: TestClient, vid: str, address: str) -> aiohttp.ClientResponse:
    """A view from an anonymous viewer at `address` (a loopback address of its own)."""
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session:
        resp = await session.post(client.make_url(f"/api/v1/videos/{vid}/views"))
        await resp.read()
        return resp


async def test_views_exact_across_processes(make_client: MakeClient) -> None:
    """Two control processes on one database, every viewer seen by both, twice: +N for N viewers."""
    one = await make_client()
    two = await make_client()
    vid = await _ready(one, await signup(one))
    viewers = [f"127.0.9.{i}" for i in range(1, 31)]
    for client in (one, two, one):
        answers = await asyncio.gather(*(_view(client, vid, a) for a in viewers))
        assert {r.status for r in answers} == {200}
    body = await _merged(two, f"/api/v1/videos/{vid}", lambda b: b["views"] >= len(viewers))
    assert body["views"] == len(viewers)
    await asyncio.sleep(1.5)  # and nothing more arrives later
    assert (await (await one.get(f"/api/v1/videos/{vid}")).json())["views"] == len(viewers)


async def test_repeat_in_process_is_not_counted(make_client: MakeClient) -> None:
    client = await make_client()
    vid = await _ready(client, await signup(client))
    first = await (await _view(client, vid, "127.0.8.1")).json()
    again = await (await _view(client, vid, "127.0.8.1")).json()
    assert first == {"views": 1, "counted": True}
    assert again == {"views": 1, "counted": False}


async def test_full_buffer_answers_503_then_flushes(make_client: MakeClient) -> None:
    """Never unbounded: past the bound a view is refused with Retry-After, and a flush starts at
    once, after which views are accepted again."""
    client = await make_client(max_pending_views=2, view_flush_seconds=3600)
    vid = await _ready(client, await signup(client))
    assert [(await _view(client, vid, f"127.0.7.{i}")).status for i in (1, 2)] == [200, 200]
    refused = await _view(client, vid, "127.0.7.3")
    assert refused.status == 503 and refused.headers["Retry-After"] == "1"
    await _merged(client, f"/api/v1/videos/{vid}", lambda b: b["views"] == 2)
    assert (await _view(client, vid, "127.0.7.3")).status == 200


async def _until_status(client: TestClient, url: str, headers: dict, status: int) -> None:
    """POST `url` until it answers `status`: another process sees a change once its cache
    (about a second) has expired."""
    async with asyncio.timeout(10):
        while (await client.post(url, headers=headers)).status != status:  # noqa: ASYNC110
            await asyncio.sleep(0.05)


async def test_signed_out_token_stops_counting(make_client: MakeClient) -> None:
    """Sessions are cached for the view path: a token signed out is refused at once by the process
    that signed it out, and by every other one once its cache expires."""
    one = await make_client()
    two = await make_client()
    vid = await _ready(one, await signup(one))
    viewer = await signup(one, "viewer@example.com")
    url = f"/api/v1/videos/{vid}/views"
    for client in (one, two):  # both have the session cached now
        assert (await client.post(url, headers=viewer)).status == 200
    assert (await one.delete("/api/v1/sessions/current", headers=viewer)).status == 204
    refused = await one.post(url, headers=viewer)
    assert refused.status == 401
    await _until_status(two, url, viewer, 401)


async def test_video_made_private_stops_counting_others(make_client: MakeClient) -> None:
    """Videos are cached for the view path: once private, a video takes no views from others (at
    once where it was changed, within the cache's second elsewhere) and still takes its owner's."""
    one = await make_client()
    two = await make_client()
    owner = await signup(one)
    vid = await _ready(one, owner)
    viewer = await signup(one, "viewer@example.com")
    url = f"/api/v1/videos/{vid}/views"
    for client in (one, two):
        assert (await client.post(url, headers=viewer)).status == 200
    resp = await one.patch(f"/api/v1/videos/{vid}", json={"privacy": "private"}, headers=owner)
    assert resp.status == 200, await resp.text()
    assert (await one.post(url, headers=viewer)).status == 404
    await _until_status(two, url, viewer, 404)
    assert (await two.post(url, headers=owner)).status == 200
    # Merged: the viewer once (one window, both processes), the owner once.
    body = await _merged(one, f"/api/v1/videos/{vid}", lambda b: b["views"] >= 2, owner)
    assert body["views"] == 2
