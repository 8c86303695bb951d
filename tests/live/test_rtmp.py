"""The RTMP server against real publishers: the ffmpeg CLI pushing a generated source, and raw
sockets for what no encoder sends (garbage, HTTP, stalls). No assertion on speed: timeouts are
bounds only."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import signal
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from packager.live.chunks import ChunkLimits
from packager.live.publisher import MediaLimits
from packager.live.rtmp import RtmpLimits, RtmpServer
from tests.live.publishers import BOUND, check_stream, ffmpeg, finished, librtmp, librtmp_publish
from tests.live.sinks import Authorizer, running

LIMITS = RtmpLimits(max_connections=8, handshake_timeout=3.0, idle_timeout=3.0, publish_timeout=10.0,
                    media=MediaLimits(video_timeout=3.0))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[RtmpServer, Authorizer]]:
    async with running(lambda authorize: RtmpServer(authorize, port=0, limits=LIMITS)) as served:
        yield served


def url(server: RtmpServer, key: str) -> str:
    return f"rtmp://127.0.0.1:{server.port}/live/{key}"


async def test_ffmpeg_push_reaches_the_sink(ingest: tuple[RtmpServer, Authorizer]) -> None:
    server, authorize = ingest
    assert await finished(await ffmpeg(url(server, "good?token=x"))) == 0
    (sink,) = authorize.sinks
    await asyncio.wait_for(sink.ended.wait(), BOUND)
    assert authorize.calls == [("live", "good")]
    check_stream(sink, 3)
    assert server.metrics.received.labels("rtmp")._value.get() > 50_000
    assert server.metrics.publishers.labels("rtmp")._value.get() == 0


async def test_librtmp_publisher_as_obs(ingest: tuple[RtmpServer, Authorizer], tmp_path: Path) -> None:
    lib = librtmp()
    if lib is None:
        pytest.skip("librtmp.so.1 is not installed")
    server, authorize = ingest
    clip = tmp_path / "clip.flv"
    assert await finished(await ffmpeg(str(clip), 3)) == 0
    flv = clip.read_bytes()
    assert not await asyncio.to_thread(librtmp_publish, lib, url(server, "wrong"), flv)
    assert await asyncio.to_thread(librtmp_publish, lib, url(server, "good"), flv)
    (sink,) = authorize.sinks
    await asyncio.wait_for(sink.ended.wait(), BOUND)
    check_stream(sink, 3)
    assert authorize.calls == [("live", "wrong"), ("live", "good")]


async def test_wrong_key_is_refused_before_any_media(ingest: tuple[RtmpServer, Authorizer],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        assert await finished(await ffmpeg(url(server, "wrong"), 2)) != 0
    assert authorize.calls == [("live", "wrong")] and authorize.sinks == []
    assert cut_off_reasons(caplog) == ["unauthorized"]
    assert server.metrics.refusals.labels("rtmp", "unauthorized")._value.get() == 1


async def test_second_publisher_on_a_live_key_is_refused(ingest: tuple[RtmpServer, Authorizer]) -> None:
    server, authorize = ingest
    first = await ffmpeg(url(server, "good"), 5)
    await asyncio.wait_for(authorize.first_packet(), BOUND)
    assert await finished(await ffmpeg(url(server, "good"), 2)) != 0
    refused_at = asyncio.get_running_loop().time()
    assert await finished(first) == 0
    (sink,) = authorize.sinks
    check_stream(sink, 5)
    assert any(at > refused_at for at, _ in sink.arrivals)  # the first went on after the refusal


async def test_two_streams_at_once_with_b_frames(ingest: tuple[RtmpServer, Authorizer]) -> None:
    server, authorize = ingest
    b_frames = ("-bf", "2", "-x264-params", "b-adapt=0")
    runs = [await ffmpeg(url(server, "good"), 3, video=b_frames), await ffmpeg(url(server, "other"), 3)]
    assert [await finished(run) for run in runs] == [0, 0]
    assert sorted(key for _, key in authorize.calls) == ["good", "other"]
    for sink in authorize.sinks:
        check_stream(sink, 3)
    with_b_frames = authorize.sinks[[key for _, key in authorize.calls].index("good")]
    assert any(p.pts > p.dts for p in with_b_frames.packets_of("video"))  # composition times kept


async def test_garbage_beside_a_good_stream(ingest: tuple[RtmpServer, Authorizer],
                                            caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        good = await ffmpeg(url(server, "good"), 3)
        await asyncio.wait_for(authorize.first_packet(), BOUND)
        noise = random.Random(14).randbytes(64 * 1024)
        http = b"GET /live/good HTTP/1.1\r\nHost: x\r\n\r\n"
        assert await asyncio.wait_for(send_and_wait_closed(server, noise, handshake=True), BOUND)
        assert await asyncio.wait_for(send_and_wait_closed(server, http, handshake=False), BOUND)
        assert await finished(good) == 0
    (sink,) = authorize.sinks
    check_stream(sink, 3)
    reasons = cut_off_reasons(caplog)
    assert len(reasons) == 2 and "not_rtmp" in reasons
    lines = [r.msg for r in caplog.records if r.name.startswith("ingest") and r.levelno >= logging.INFO]
    assert sorted(lines) == ["publish ended", "publisher cut off", "publisher cut off"]  # one a connection


async def test_stalled_publisher_is_cut_off(ingest: tuple[RtmpServer, Authorizer],
                                            caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        stalled = await ffmpeg(url(server, "good"), 20)
        await asyncio.wait_for(authorize.first_packet(), BOUND)
        stalled.send_signal(signal.SIGSTOP)  # the socket stays open, nothing more comes
        try:
            (sink,) = authorize.sinks
            await asyncio.wait_for(sink.ended.wait(), BOUND)
        finally:
            stalled.kill()
            stalled.send_signal(signal.SIGCONT)
            await stalled.wait()
    assert cut_off_reasons(caplog) == ["idle_timeout"]
    assert server.metrics.publishers.labels("rtmp")._value.get() == 0


async def test_silent_sockets_are_cut_off(ingest: tuple[RtmpServer, Authorizer],
                                          caplog: pytest.LogCaptureFixture) -> None:
    server, _ = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        mid_handshake = await asyncio.wait_for(send_and_wait_closed(server, b"\x03" + bytes(100),
                                                                    handshake=False), BOUND)
        after_handshake = await asyncio.wait_for(send_and_wait_closed(server, b"", handshake=True), BOUND)
    assert mid_handshake and after_handshake
    assert sorted(cut_off_reasons(caplog)) == ["handshake_timeout", "idle_timeout"]


async def test_publisher_without_video_is_cut_off(ingest: tuple[RtmpServer, Authorizer],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        audio_only = await ffmpeg(url(server, "good"), 10, audio_only=True)
        await asyncio.wait_for(authorize.published(), BOUND)
        (sink,) = authorize.sinks
        await asyncio.wait_for(sink.ended.wait(), BOUND)
        await finished(audio_only)
    assert sink.starts == 0 and sink.arrivals == []
    assert cut_off_reasons(caplog) == ["no_video"]


async def test_closing_the_server_ends_live_publishers() -> None:
    async with running(lambda authorize: RtmpServer(authorize, port=0, limits=LIMITS)) as (server, authorize):
        publisher = await ffmpeg(url(server, "good"), 30)
        await asyncio.wait_for(authorize.first_packet(), BOUND)
    assert authorize.sinks[0].ends == 1  # (and `running` checked it was once)
    assert await finished(publisher) != 0


async def test_absurd_chunk_size_and_too_many_connections(caplog: pytest.LogCaptureFixture) -> None:
    authorize = Authorizer("good")
    server = RtmpServer(authorize, port=0, limits=RtmpLimits(
        max_connections=2, handshake_timeout=2.0, chunks=ChunkLimits(max_chunk_size=1 << 16)))
    await server.start()
    try:
        with caplog.at_level(logging.INFO, "ingest"):
            huge = b"\x02" + bytes(3) + b"\x00\x00\x04\x01" + bytes(4) + struct.pack(">I", 0x7FFFFFFF)
            assert await asyncio.wait_for(send_and_wait_closed(server, huge, handshake=True), BOUND)
            held = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await asyncio.sleep(0.2)  # both accepted before the third arrives
            assert await asyncio.wait_for(send_and_wait_closed(server, b"", handshake=False), BOUND)
            for _, writer in held:
                writer.close()
    finally:
        await server.close()
    assert cut_off_reasons(caplog)[:2] == ["chunk_size", "too_many_connections"]
    assert server.metrics.refusals.labels("rtmp", "too_many_connections")._value.get() == 1


async def send_and_wait_closed(server: RtmpServer, data: bytes, *, handshake: bool) -> bool:
    """Connect, optionally complete a handshake, send `data`, and read until the server closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        if handshake:
            writer.write(b"\x03" + os.urandom(1536))
            s0s1 = await reader.readexactly(1 + 1536)
            writer.write(s0s1[1:])
            await reader.readexactly(1536)
        writer.write(data)
        while await reader.read(65536):
            pass
        return True
    except ConnectionError:
        return True
    finally:
        writer.close()


def cut_off_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.fields["reason"] for record in caplog.records if record.msg == "publisher cut off"]
