"""SRT ingest against the real ffmpeg CLI as an SRT caller (Debian's ffmpeg has libsrt), MPEG-TS
over SRT, through our UDP front and an ffmpeg listener, to the same sink as RTMP."""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import struct
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from packager.live.publisher import MediaLimits
from packager.live.rtmp import RtmpServer
from packager.live.srt import Handshake, SrtLimits, SrtServer, publish_key
from packager.live.stats import IngestMetrics
from tests.live.publishers import BOUND, check_stream, ffmpeg, finished
from tests.live.sinks import Authorizer, running

LIMITS = SrtLimits(handshake_timeout=5.0, idle_timeout=3.0, media=MediaLimits(video_timeout=3.0))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[SrtServer, Authorizer]]:
    async with running(lambda authorize: SrtServer(authorize, port=0, limits=LIMITS)) as served:
        yield served


def url(server: SrtServer, stream_id: str) -> str:
    return f"srt://127.0.0.1:{server.port}?streamid={stream_id}"


def test_stream_ids() -> None:
    assert publish_key("publish:abc?x") == "abc?x"
    assert publish_key("#!::m=publish,r=abc,u=me") == "abc"
    for refused in ("", "publish:", "read:abc", "#!::r=abc", "#!::m=request,r=abc", "abc"):
        assert publish_key(refused) is None


async def test_ffmpeg_srt_push_reaches_the_sink(ingest: tuple[SrtServer, Authorizer]) -> None:
    server, authorize = ingest
    assert await finished(await ffmpeg(url(server, "publish:good"), 3, muxer="mpegts")) == 0
    (sink,) = authorize.sinks
    await asyncio.wait_for(sink.ended.wait(), BOUND)
    assert authorize.calls == [("live", "good")]
    check_stream(sink, 3, tail_lost=True)
    assert server.metrics.publishers.labels("srt")._value.get() == 0


async def test_wrong_key_and_second_publisher_are_refused(ingest: tuple[SrtServer, Authorizer],
                                                          caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        first = await ffmpeg(url(server, "#!::r=good,m=publish"), 5, muxer="mpegts")
        await asyncio.wait_for(authorize.first_packet(), BOUND)
        refused = [await ffmpeg(url(server, stream_id), 2, muxer="mpegts")
                   for stream_id in ("publish:good", "publish:wrong", "read:good")]
        assert [await finished(run) for run in refused] != [0, 0, 0]
        assert all(run.returncode != 0 for run in refused)
        assert await finished(first) == 0
    (sink,) = authorize.sinks
    await asyncio.wait_for(sink.ended.wait(), BOUND)
    check_stream(sink, 5, tail_lost=True)
    reasons = [r.fields["reason"] for r in caplog.records if r.msg == "publisher cut off"]
    assert sorted(reasons) == ["bad_stream_id", "unauthorized", "unauthorized"]


async def test_cut_off_caller_is_told_to_shut_down(ingest: tuple[SrtServer, Authorizer],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        audio_only = await ffmpeg(url(server, "publish:good"), 30, audio_only=True, muxer="mpegts")
        assert await finished(audio_only) != 0  # well before its 30 s: no video, cut off, shut down
    (sink,) = authorize.sinks
    assert sink.ends == 1 and sink.starts == 0
    assert [r.fields["reason"] for r in caplog.records if r.msg == "publisher cut off"] == ["no_video"]


async def test_udp_garbage_beside_a_good_stream(ingest: tuple[SrtServer, Authorizer]) -> None:
    server, authorize = ingest
    good = await ffmpeg(url(server, "publish:good"), 3, muxer="mpegts")
    await asyncio.wait_for(authorize.first_packet(), BOUND)
    noise = random.Random(14)
    forged = Handshake(5, 0, 5, 1, 1500, 8192, 0xFFFFFFFF, 7, 1234, bytes(16), b"")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for _ in range(200):
            sender.sendto(noise.randbytes(noise.randrange(1, 1500)), ("127.0.0.1", server.port))
        sender.sendto(forged.packet(0), ("127.0.0.1", server.port))  # a conclusion with no valid cookie
        sender.sendto(struct.pack(">I", 0x80000000), ("127.0.0.1", server.port))
    assert await finished(good) == 0
    (sink,) = authorize.sinks
    await asyncio.wait_for(sink.ended.wait(), BOUND)
    check_stream(sink, 3, tail_lost=True)
    assert authorize.calls == [("live", "good")]
    assert server.metrics.refusals.labels("srt", "not_srt")._value.get() > 0  # (UDP: some dropped)


async def test_rtmp_and_srt_share_one_registry() -> None:
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    servers = [RtmpServer(Authorizer(), port=0, metrics=metrics),
               SrtServer(Authorizer(), port=0, metrics=metrics)]
    for server in servers:
        await server.start()
    for server in servers:
        await server.close()
    text = generate_latest(registry).decode()
    assert "reel_ingest_publishers" in text and "reel_ingest_refusals_total" in text


async def test_an_encrypted_caller_is_refused_by_the_listener(ingest: tuple[SrtServer, Authorizer],
                                                              caplog: pytest.LogCaptureFixture) -> None:
    server, authorize = ingest
    with caplog.at_level(logging.INFO, "ingest"):
        encrypted = url(server, "publish:good") + "&passphrase=0123456789abcdef"
        assert await finished(await ffmpeg(encrypted, 2, muxer="mpegts")) != 0
    (sink,) = authorize.sinks  # authorized first, then refused by libsrt: no passphrase here
    assert sink.starts == 0 and sink.ends == 1
    assert [r.fields["reason"] for r in caplog.records if r.msg == "publisher cut off"] == ["srt_refused"]
