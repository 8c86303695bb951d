"""The RTMP server's parts on bytes no encoder we can run sends: AMF0 edge cases, chunk streams
with extended timestamps, interleaving and abort, AudioSpecificConfigs of every common kind, and
the publisher's media rules (time running back, a configuration changing mid-stream)."""

from __future__ import annotations

import asyncio
import struct

import pytest

from packager.live import amf, flv
from packager.live.chunks import ABORT, AUDIO, SET_CHUNK_SIZE, VIDEO, ChunkLimits, ChunkReader
from packager.live.errors import CutOff
from packager.live.publisher import MediaLimits, Publisher
from tests.live.sinks import RecordingSink


def test_amf_round_trip_and_bounds() -> None:
    values = ["connect", 1.0, {"app": "live", "nested": {"ok": True}, "list": [1.0, None]}, None, "x" * 70000]
    assert amf.decode(amf.encode(*values)) == values
    ecma = bytes([amf.ECMA_ARRAY]) + struct.pack(">I", 99) + b"\x00\x01a" + amf.encode(2.0) + b"\x00\x00\x09"
    assert amf.decode(ecma) == [{"a": 2.0}]
    huge_array = bytes([amf.STRICT_ARRAY]) + struct.pack(">I", 1 << 30)
    deep = b"\x03\x00\x01a" * 40 + b"\x05" + b"\x00\x00\x09" * 40
    for bad in (b"\x02\x00\x05ab", huge_array, b"\x11", deep):
        with pytest.raises(amf.AmfError):
            amf.decode(bad)


def chunk(fmt: int, csid: int, payload: bytes, *, stamp: int = 0, type_id: int = VIDEO,
          length: int | None = None) -> bytes:
    """One chunk with a one-byte basic header; `stamp` past 24 bits goes extended."""
    field = min(stamp, 0xFFFFFF)
    size = len(payload) if length is None else length
    header = [b"", struct.pack(">I", field)[1:] + size.to_bytes(3, "big") + bytes([type_id]),
              struct.pack(">I", field)[1:]]
    body = bytes([fmt << 6 | csid])
    if fmt == 0:
        body += header[1] + struct.pack("<I", 1)
    elif fmt == 1:
        body += header[1]
    elif fmt == 2:
        body += header[2]
    if stamp >= 0xFFFFFF:
        body += struct.pack(">I", stamp)
    return body + payload


async def read_all(data: bytes, limits: ChunkLimits | None = None) -> list[tuple[int, int, bytes]]:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    chunks = ChunkReader(reader, limits or ChunkLimits())
    out = []
    while True:
        try:
            message = await chunks.read()
        except asyncio.IncompleteReadError:
            return out
        out.append((message.type_id, message.timestamp, message.payload))


async def test_chunk_stream_reassembly() -> None:
    big = bytes(range(256)) * 2  # 512 bytes: four chunks at the default 128
    data = (
        chunk(0, 4, big[:128], stamp=0x1000000, length=512)  # extended, continued by type-3 chunks
        + chunk(0, 5, b"A" * 10, stamp=7, type_id=AUDIO)  # interleaved inside the video message
        + chunk(3, 4, big[128:256], stamp=0x1000000) + chunk(3, 4, big[256:384], stamp=0x1000000)
        + chunk(3, 4, big[384:], stamp=0x1000000)
        + chunk(2, 5, b"B" * 10, stamp=20)  # delta 20
        + chunk(3, 5, b"C" * 10)  # a new message repeating the delta
        + chunk(0, 2, struct.pack(">I", 4), type_id=SET_CHUNK_SIZE)
        + chunk(0, 6, b"D" * 4, type_id=AUDIO, length=8)  # aborted halfway
        + chunk(0, 2, struct.pack(">I", 6), type_id=ABORT)
        + chunk(1, 6, b"E" * 4, stamp=3, type_id=AUDIO)
    )
    assert await read_all(data) == [
        (AUDIO, 7, b"A" * 10), (VIDEO, 0x1000000, big), (AUDIO, 27, b"B" * 10),
        (AUDIO, 47, b"C" * 10), (AUDIO, 3, b"E" * 4),
    ]


@pytest.mark.parametrize(("data", "reason"), [
    (chunk(1, 4, b"x"), "bad_chunk"),  # no full header first
    (chunk(0, 4, b"x", type_id=99), "bad_message"),
    (chunk(0, 4, b"", length=2 << 20), "message_too_large"),
    (chunk(0, 2, struct.pack(">I", 0), type_id=SET_CHUNK_SIZE), "chunk_size"),
    (chunk(0, 2, struct.pack(">I", 1 << 20), type_id=SET_CHUNK_SIZE), "chunk_size"),
    (chunk(0, 4, b"x" * 128, length=200) + chunk(0, 4, b"y"), "bad_chunk"),  # header mid-message
    (b"".join(chunk(0, 3 + i, b"x" * 128, length=900) for i in range(20)), "message_too_large"),
])
async def test_chunk_stream_limits(data: bytes, reason: str) -> None:
    with pytest.raises(CutOff) as cut:
        await read_all(data, ChunkLimits(max_message_bytes=1000, max_chunk_size=1 << 16))
    assert cut.value.reason == reason


def bits(*fields: tuple[int, int]) -> bytes:
    """(value, width) fields, big-endian, zero-padded to whole bytes."""
    value, width = 0, 0
    for field, size in fields:
        value, width = value << size | field, width + size
    pad = -width % 8
    return (value << pad).to_bytes((width + pad) // 8, "big")


@pytest.mark.parametrize(("asc", "rate", "channels"), [
    (b"\x12\x10", 44100, 2),  # AAC-LC 44.1 kHz stereo
    (b"\x11\x90", 48000, 2),
    (b"\x11\x88", 48000, 1),
    (bits((5, 5), (6, 4), (2, 4), (3, 4), (2, 5)), 48000, 2),  # HE-AAC: 24 kHz core, 48 kHz out
    (bits((29, 5), (6, 4), (1, 4), (3, 4), (2, 5)), 48000, 2),  # HE-AACv2: mono core, stereo out
    (bits((2, 5), (15, 4), (32000, 24), (2, 4)), 32000, 2),  # an explicit 24-bit frequency
    (bits((31, 5), (10, 6), (4, 4), (6, 4)), 44100, 6),  # an escaped object type, 5.1
])
def test_audio_specific_config(asc: bytes, rate: int, channels: int) -> None:
    config = flv.audio_config(asc)
    assert (config.sample_rate, config.channels, config.asc) == (rate, channels, asc)


@pytest.mark.parametrize("asc", [b"\x12", b"\x16\x90", b"\x12\x00"])
def test_bad_audio_specific_config(asc: bytes) -> None:
    with pytest.raises(CutOff):
        flv.audio_config(asc)


AVCC = bytes([1, 0x42, 0xC0, 0x1E, 0xFF, 0xE1, 0, 4, 0x67, 0x42, 0xC0, 0x1E, 1, 0, 4, 0x68, 0xCE, 0x3C, 0x80])


def video_tag(keyframe: bool, composition: int = 0, nals: bytes = b"\x00\x00\x00\x02\x65\x88") -> bytes:
    return bytes([0x17 if keyframe else 0x27, 1]) + composition.to_bytes(3, "big", signed=True) + nals


async def test_publisher_media_rules() -> None:
    sink = RecordingSink()
    publisher = Publisher(sink, MediaLimits(video_timeout=5, backwards_ms=100), now=0)
    await publisher.audio(b"\xaf\x00\x11\x90", 0)
    await publisher.audio(b"\xaf\x01\x21\x00", 0)  # held until the first video frame
    await publisher.video(b"\x17\x00\x00\x00\x00" + AVCC, 0, now=0)
    await publisher.video(video_tag(True, 66), 0, now=1)
    await publisher.video(video_tag(False, -33), 33, now=2)
    assert sink.starts == 1 and sink.video is not None and sink.video.avcc == AVCC
    assert [(p.kind, p.dts, p.pts, p.keyframe) for p in (a for _, a in sink.arrivals)] == [
        ("audio", 0, 0, False), ("video", 0, 66, True), ("video", 33, 0, False)]
    await publisher.video(video_tag(False), 0, now=3)  # back 33 ms: jitter within tolerance
    publisher.check(now=7.9)
    with pytest.raises(CutOff, match="no_video"):
        publisher.check(now=8.1)
    for call, reason in [
        (publisher.video(video_tag(False), 33 - 200, now=3), "timestamps_backwards"),
        (publisher.video(video_tag(False, nals=b"\x00\x00\x00\x09\x65"), 40, now=3), "bad_video"),
        (publisher.video(b"\x17\x00\x00\x00\x00" + AVCC[:-1] + b"\x81", 40, now=3), "config_changed"),
        (publisher.video(b"\x1c\x00\x00\x00\x00", 40, now=3), "unsupported_codec"),
        (publisher.video(b"\x90av01", 40, now=3), "unsupported_codec"),  # Enhanced RTMP AV1
        (publisher.video(b"\x90hvc1", 40, now=3), "bad_video"),  # HEVC without its hvcC
        (publisher.audio(b"\x2f\x00", 40), "unsupported_codec"),
    ]:
        with pytest.raises(CutOff) as cut:
            await call
        assert cut.value.reason == reason
    await publisher.end()
    await publisher.end()
    assert sink.ends == 1


async def test_a_failing_sink_is_a_cut_off() -> None:
    class Failing(RecordingSink):
        async def start(self, video: object, audio: object) -> None:
            raise RuntimeError("packager full")

    sink = Failing()
    publisher = Publisher(sink, MediaLimits(), now=0)
    await publisher.audio(b"\xaf\x00\x11\x90", 0)
    await publisher.video(b"\x17\x00\x00\x00\x00" + AVCC, 0, now=0)
    with pytest.raises(CutOff, match="sink_error"):
        await publisher.video(video_tag(True), 0, now=0)
    await publisher.end()
    assert sink.ends == 1


async def test_a_late_audio_config_is_waited_for_a_while() -> None:
    late, silent = RecordingSink(), RecordingSink()
    for sink in (late, silent):
        publisher = Publisher(sink, MediaLimits(audio_wait_ms=1000), now=0)
        await publisher.video(b"\x17\x00\x00\x00\x00" + AVCC, 0, now=0)
        for n in range(10):  # 330 ms of video, held
            await publisher.video(video_tag(n == 0), n * 33, now=0)
        assert sink.starts == 0
        if sink is late:  # as ffmpeg remuxing MPEG-TS to FLV sends it
            await publisher.audio(b"\xaf\x00\x11\x90", 0)
            await publisher.audio(b"\xaf\x01\x21\x00", 5)
        else:
            for n in range(10, 40):
                await publisher.video(video_tag(False), n * 33, now=0)
        await publisher.end()
    assert late.starts == 1 and late.audio is not None
    assert [p.kind for _, p in late.arrivals] == ["video"] * 10 + ["audio"]
    assert silent.starts == 1 and silent.audio is None and len(silent.arrivals) == 40


async def test_what_is_held_before_the_start_is_bounded() -> None:
    sink = RecordingSink()
    publisher = Publisher(sink, MediaLimits(pending_packets=8), now=0)
    await publisher.audio(b"\xaf\x00\x11\x90", 0)
    for n in range(100):  # audio, and no video config yet
        await publisher.audio(b"\xaf\x01\x21\x00", n * 21)
    await publisher.video(b"\x17\x00\x00\x00\x00" + AVCC, 0, now=0)
    await publisher.video(video_tag(True), 2100, now=0)
    assert sink.starts == 1 and [p.dts for _, p in sink.arrivals] == [n * 21 for n in range(93, 100)] + [2100]


def flv_tag(tag_type: int, timestamp: int, payload: bytes) -> bytes:
    header = bytes([tag_type]) + len(payload).to_bytes(3, "big") + (timestamp & 0xFFFFFF).to_bytes(3, "big")
    header += bytes([timestamp >> 24]) + bytes(3)
    return header + payload + (11 + len(payload)).to_bytes(4, "big")


def test_aggregate_tags_keep_their_spacing() -> None:
    body = flv_tag(9, 5000, b"v1") + flv_tag(8, 5010, b"a1") + flv_tag(9, 5033, b"v2")
    assert list(flv.tags(body, 100)) == [(9, 100, b"v1"), (8, 110, b"a1"), (9, 133, b"v2")]
    with pytest.raises(CutOff):
        list(flv.tags(body[:-3], 100))
