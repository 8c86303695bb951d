"""Bad clients and bad upstreams: each answered cleanly, none able to hold the edge or its memory.

Timeouts here are shortened through make_app's tuning; the edge checks its timers once a second,
so a test waits at most a couple of seconds for one to pass.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest

from tests.edge.conftest import VID, FastClient, metric, pattern
from tests.edge.test_edge_coalescing import until

SEG = f"/vod/{VID}/v360/seg_00001.m4s"


async def exchange(client, raw: bytes) -> bytes:
    """Send raw bytes on a new connection; everything the edge sends back until it closes."""
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(raw)
    try:
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()


def status_of(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


@pytest.fixture
async def fast_edge():
    """Like make_edge, but only the front `reel edge` runs: these are its own defences."""
    import edge.app

    clients: list[FastClient] = []

    async def start(origins: list[str], cache_bytes: int = 16 << 20, **kw) -> FastClient:
        kw.setdefault("health_interval", 0)
        client = FastClient(edge.app.make_app(region="eu", origins=origins, cache_bytes=cache_bytes, **kw))
        clients.append(client)
        return client

    yield start
    for client in clients:
        await client.close()


@pytest.mark.parametrize(
    "raw",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /vod/x HTTP/9.9\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\nBad\x01Name: y\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64),  # TLS to a plain port
    ],
)
async def test_malformed_requests_get_400_and_a_close(make_edge, upstream, raw):
    steer, url = upstream
    client = await make_edge([url])
    reply = await exchange(client, raw)
    assert status_of(reply) == 400
    assert b"Traceback" not in reply
    assert sum(steer.requests.values()) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /vod/x HTTP/1.1\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n",
        b"GET /vod/x HTTP/1.1\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"b" * 100) for i in range(300))
        + b"\r\n",
        b"GET /vod/" + b"a" * 20_000 + b" HTTP/1.1\r\n\r\n",
    ],
)
async def test_oversized_heads_are_refused(make_edge, upstream, raw):
    steer, url = upstream
    client = await make_edge([url])
    reply = await exchange(client, raw)
    if isinstance(client, FastClient):  # the edge's own front says what it refuses, as problem+json
        assert status_of(reply) == 431
        assert b"Content-Type: application/problem+json" in reply
    else:  # aiohttp's server refuses it before the edge sees it
        assert status_of(reply) == 400
    assert b"Traceback" not in reply
    assert sum(steer.requests.values()) == 0


async def test_an_answer_then_a_close_after_a_refusal_in_a_pipeline(fast_edge, upstream):
    steer, url = upstream
    steer.add(SEG, pattern(100))
    client = await fast_edge([url])
    reply = await exchange(client, f"GET {SEG} HTTP/1.1\r\nHost: x\r\n\r\nBROKEN\r\n\r\n".encode())
    first, _, rest = reply.partition(b"\r\n\r\n")
    assert status_of(first) == 200
    assert rest.startswith(pattern(100))
    assert status_of(rest[100:]) == 400


async def test_pipelined_requests_are_answered_in_order(fast_edge, upstream):
    steer, url = upstream
    paths = [f"/vod/{VID}/v360/seg_{n:05d}.m4s" for n in range(4)]
    for n, path in enumerate(paths):
        steer.add(path, pattern(1000 + n, n))
    client = await fast_edge([url])
    await (await client.get(paths[2])).read()  # one of them cached, the others not
    raw = b"".join(f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths)
    reply = await exchange(client, raw + b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n")
    offset = 0
    for n in range(4):
        head_end = reply.index(b"\r\n\r\n", offset) + 4
        assert status_of(reply[offset:head_end]) == 200
        assert reply[head_end : head_end + 1000 + n] == pattern(1000 + n, n)
        offset = head_end + 1000 + n
    assert status_of(reply[offset:]) == 200 and b'"status": "ok"' in reply[offset:]


async def test_slowloris_is_cut_off_and_does_not_slow_others(fast_edge, upstream):
    steer, url = upstream
    steer.add(SEG, pattern(1000))
    client = await fast_edge([url], head_timeout=0.5)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {SEG} HTTP/1.1\r\nHost: x\r\n".encode())

    async def drip() -> None:
        for _ in range(40):  # at most 8 s of a header a byte at a time
            writer.write(b"X")
            await asyncio.sleep(0.2)

    dripping = asyncio.create_task(drip())
    resp = await client.get(SEG)  # another client is served meanwhile
    assert resp.status == 200 and await resp.read() == pattern(1000)
    reply = await asyncio.wait_for(reader.read(), 5)
    assert status_of(reply) == 408
    assert await metric(client, 'reel_edge_client_timeouts_total{phase="head"}') == 1
    dripping.cancel()
    writer.close()


async def test_idle_keep_alive_connections_are_closed(fast_edge, upstream):
    steer, url = upstream
    steer.add(SEG, pattern(10))
    client = await fast_edge([url], keepalive_timeout=0.3)
    reader, writer = await asyncio.open_connection(client.host, client.port)
    writer.write(f"GET {SEG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    reply = await asyncio.wait_for(reader.read(), 5)  # returns when the edge closes the idle connection
    assert status_of(reply) == 200 and reply.endswith(pattern(10))
    assert await metric(client, 'reel_edge_client_timeouts_total{phase="idle"}') == 1
    writer.close()


async def test_a_reader_who_never_reads_holds_little_then_is_dropped(fast_edge, upstream):
    steer, url = upstream
    steer.add(SEG, pattern(4 << 20))
    client = await fast_edge([url], cache_bytes=64 << 20, send_timeout=0.3)
    await (await client.get(SEG)).read()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    # Twenty requests for 4 MiB each, and not a byte read: 80 MiB the edge must not queue up.
    sock.send(f"GET {SEG} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 20)
    resp = await client.get(SEG)  # others are not slowed
    assert await resp.read() == pattern(4 << 20)
    await until(lambda: metric(client, 'reel_edge_client_timeouts_total{phase="send"}'), 1)
    received = await asyncio.wait_for(asyncio.to_thread(_read_until_closed, sock), 10)
    sock.close()
    assert received < 2 * (4 << 20)  # what the socket buffers held, not twenty responses


def _read_until_closed(sock: socket.socket) -> int:
    """Bytes read from `sock` until the peer closes or resets it (no reading after 5 s idle)."""
    sock.setblocking(True)
    sock.settimeout(5)
    received = 0
    try:
        while data := sock.recv(1 << 20):
            received += len(data)
    except ConnectionResetError:
        pass
    return received


async def test_a_slow_reader_of_a_streamed_object_is_cut_not_waited_for(fast_edge, upstream):
    steer, url = upstream
    size = 24 << 20
    steer.add(SEG, bytes(size))  # far over the largest cached object: streamed through
    steer.stall_head.add(SEG)
    steer.gate.clear()  # both readers join before the first byte
    client = await fast_edge([url], cache_bytes=1 << 20, stream_window=1 << 20)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (client.host, client.port))
    sock.send(f"GET {SEG} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await until(lambda: metric(client, "reel_edge_inflight_readers"), 1)
    fast = asyncio.create_task(client.get(SEG))
    await until(lambda: metric(client, "reel_edge_inflight_readers"), 2)
    steer.gate.set()
    resp = await fast
    assert resp.headers["X-Cache"] == "COALESCED"
    assert len(await asyncio.wait_for(resp.read(), 10)) == size  # at the fast reader's pace
    received = await asyncio.wait_for(asyncio.to_thread(_read_until_closed, sock), 10)
    sock.close()
    assert received < size  # the slow one was cut off
    assert steer.requests[SEG] == 1


# -- bad upstreams ----------------------------------------------------------------------------------


@pytest.fixture
async def raw_upstream() -> AsyncIterator[Callable[[Callable[..., Awaitable[None]]], Awaitable[str]]]:
    """raw_upstream(handler) -> URL of a TCP server that runs handler(reader, writer) per connection."""
    servers: list[asyncio.Server] = []

    async def start(handler: Callable[..., Awaitable[None]]) -> str:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(run, "127.0.0.1", 0)
        servers.append(server)
        return f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"

    yield start
    for server in servers:
        server.close()


def _sends(data: bytes, then_wait: float = 0.0):
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(data)
        await writer.drain()
        if then_wait:
            await asyncio.sleep(then_wait)

    return handler


@pytest.mark.parametrize(
    "reply",
    [
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Huge: " + b"h" * 100_000 + b"\r\nContent-Length: 2\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\nok",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken",  # broken with its head
        b"",  # closes without a word
    ],
)
async def test_upstream_garbage_is_a_502(make_edge, raw_upstream, reply):
    url = await raw_upstream(_sends(reply))
    client = await make_edge([url])
    async with client.get(SEG) as resp:
        assert resp.status == 502
        assert resp.headers["Content-Type"].startswith("application/problem+json")
        assert resp.headers["X-Cache"] == "MISS"
        assert (await resp.json())["status"] == 502
    assert await metric(client, "reel_edge_cache_objects") == 0
    assert await metric(client, 'reel_edge_fetches_total{outcome="transient_error"}') == 1


async def test_upstream_body_broken_after_its_head_is_a_cut_connection(make_edge, raw_upstream):
    """Once the head is on its way to the client the status cannot change: the client sees the
    body end uncleanly (a cut connection), never a short body that looks complete."""
    head_seen = asyncio.Event()

    async def head_then_broken_chunk(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n")
        await writer.drain()
        await head_seen.wait()
        writer.write(b"zz\r\nbroken")
        await writer.drain()

    client = await make_edge([await raw_upstream(head_then_broken_chunk)])
    async with client.get(SEG) as resp:
        assert resp.status == 200 and resp.headers["X-Cache"] == "MISS"
        head_seen.set()
        with pytest.raises(aiohttp.ClientPayloadError):
            await resp.read()
    assert await metric(client, "reel_edge_cache_objects") == 0


async def test_upstream_body_longer_than_its_length_is_never_passed_on(make_edge, raw_upstream):
    url = await raw_upstream(_sends(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 10\r\n\r\n0123456789EXTRA-GARBAGE"
    ))
    client = await make_edge([url])
    for _ in range(2):  # and nothing of it was cached
        async with client.get(SEG) as resp:
            # The upstream's connection carries bytes no response owns: the exchange is refused.
            assert resp.status == 502 and resp.headers["X-Cache"] == "MISS"
            assert b"EXTRA" not in await resp.read()


async def test_upstream_that_never_answers_is_a_504(make_edge, raw_upstream):
    url = await raw_upstream(_sends(b"", then_wait=10))
    client = await make_edge([url], first_byte_timeout=0.3)
    async with client.get(SEG) as resp:
        assert resp.status == 504
        assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert await metric(client, 'reel_edge_fetches_total{outcome="timeout"}') == 1


async def test_upstream_stalling_mid_body_is_cut_and_not_cached(make_edge, raw_upstream):
    url = await raw_upstream(_sends(
        b"HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100\r\n\r\n" + b"x" * 50,
        then_wait=10,
    ))
    client = await make_edge([url], read_timeout=0.3)
    with pytest.raises(Exception):  # noqa: B017 - the client sees an incomplete body
        async with client.get(SEG) as resp:
            await resp.read()
    assert await metric(client, "reel_edge_cache_objects") == 0
