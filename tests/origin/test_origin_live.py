"""`reel origin --live URL`: /live/... asked of the ingest (query included, body streamed as it
grows), the store when the ingest cannot be reached."""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from origin.app import make_app
from origin.store import DirectoryStore

SEGMENT = "live/live0001/v360/seg_00001.m4s"


def fake_ingest(parts: asyncio.Queue, seen: list[str]) -> web.Application:
    async def playlist(request: web.Request) -> web.Response:
        seen.append(request.path_qs)
        return web.Response(text="#EXTM3U\n", headers={"Content-Type": "application/vnd.apple.mpegurl",
                                                      "Cache-Control": "public, max-age=1"})

    async def part(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "video/iso.segment"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        while (chunk := await parts.get()) is not None:
            await response.write(chunk)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/live/live0001/v360/index.m3u8", playlist)
    app.router.add_get("/live/live0001/v360/part_00002_1.m4s", part)
    return app


async def test_live_requests_go_to_the_ingest_and_stream_back(tmp_path) -> None:
    parts: asyncio.Queue = asyncio.Queue()
    seen: list[str] = []
    ingest = TestServer(fake_ingest(parts, seen))
    await ingest.start_server()
    origin = TestClient(TestServer(make_app(DirectoryStore(tmp_path), live=str(ingest.make_url("")))))
    await origin.start_server()
    try:
        resp = await origin.get("/live/live0001/v360/index.m3u8?_HLS_msn=2&_HLS_part=1")
        assert resp.status == 200 and await resp.text() == "#EXTM3U\n"
        assert resp.headers["Cache-Control"] == "public, max-age=1"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert seen == ["/live/live0001/v360/index.m3u8?_HLS_msn=2&_HLS_part=1"]

        await parts.put(b"first")
        async with origin.get("/live/live0001/v360/part_00002_1.m4s") as part:
            assert await part.content.readany() == b"first"  # before the part is complete
            await parts.put(b"second")
            await parts.put(None)
            assert await part.read() == b"second"
    finally:
        await origin.close()
        await ingest.close()


async def test_the_store_serves_when_the_ingest_is_unreachable(tmp_path) -> None:
    store = DirectoryStore(tmp_path)
    await store.write_bytes(SEGMENT, b"segment bytes")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    origin = TestClient(TestServer(make_app(store, live=dead)))
    await origin.start_server()
    try:
        resp = await origin.get("/" + SEGMENT)
        assert resp.status == 200 and await resp.read() == b"segment bytes"
        assert (await origin.get("/live/live0001/v360/part_00009_0.m4s")).status == 404
    finally:
        await origin.close()
