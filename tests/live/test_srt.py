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

from packager.live.publisher import MediaLimits
from packager.live.srt import Handshake, SrtLimits, SrtServer, publish_key
from tests.live.publishers import BOUND, decoded_frames, ffmpeg, finished
from tests.live.sinks import Authorizer, RecordingSink

LIMITS = SrtLimits(handshake_timeout=5.0, idle_timeout=3.0, media=MediaLimits(video_timeout=3.0))


@pytest.fixture
async def ingest() -> AsyncIterator[tuple[SrtServer, Authorizer]]:
    authorize = Authorizer("good", "other")
    server = SrtServer(authorize, port=0, limits=LIMITS)
    await server.start()
    yield server, authorize
    await server.close()
    assert all(sink.ends == 1 for sink in authorize.sinks), [sink.ends for sink in authorize.sinks]


def url(server: SrtServer, stream_id: str) -> str:
    return f"srt://127.0.0.1:{server.port}?streamid={stream_id}"


def check_stream(sink: RecordingSink, seconds: float) -> None:
    """A good push of `seconds`, but for its last few hundred milliseconds: an SRT caller in live
    mode closes without lingering, so what its receive buffer still held is dropped."""
    assert sink.starts == 1 and sink.ends == 1
    assert sink.audio is not None and (sink.audio.sample_rate, sink.audio.channels) == (48000, 2)
    video, audio = sink.packets_of("video"), sink.packets_of("audio")
    assert seconds * 30 * 0.6 <= len(video) <= seconds * 30
    frames = decoded_frames(sink)
    assert len(frames) == len(video) and {(f.width, f.height) for f in frames} == {(320, 240)}
    assert video[0].keyframe and sum(p.keyframe for p in video) >= len(video) // 30
    assert all(b.dts > a.dts for a, b in zip(video, video[1:], strict=False))
    assert all(b.dts > a.dts for a, b in zip(audio, audio[1:], strict=False))
    assert len(audio) >= seconds * 48000 / 1024 * 0.6


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
    check_stream(sink, 3)
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
    check_stream(sink, 5)
    reasons = [r.fields["reason"] for r in caplog.records if r.msg == "publisher cut off"]
    assert sorted(reasons) == ["bad_stream_id", "unauthorized", "unauthorized"]


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
    check_stream(sink, 3)
    assert authorize.calls == [("live", "good")]
    assert server.metrics.refusals.labels("srt", "not_srt")._value.get() > 0  # (UDP: some dropped)
