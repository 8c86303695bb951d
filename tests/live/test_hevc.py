"""Enhanced RTMP HEVC ingest: a publisher sending H.265 in the extended video tag header (FourCC
`hvc1`, as OBS 30+ and ffmpeg 6.1+ do) is decoded and transcoded into the same H.264 ladder,
and its VOD passes the packager's checks. This machine's ffmpeg (5.1) cannot publish Enhanced
RTMP, so the FLV is written here from an x265 clip and published with librtmp, paced."""

from __future__ import annotations

import asyncio
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from packager.live.ingest import Ingest, Ports, StaticKeys
from tests.live.publishers import BOUND, free_port, librtmp, librtmp_publish, vod_master
from tests.live.test_ingest_class import SMALL
from tests.media import check_hls, ffprobe_json

SECONDS = 4.0


def hevc_clip(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error",
                    "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
                    "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", str(SECONDS),
                    "-c:v", "libx265", "-preset", "ultrafast",  # with B-frames: composition offsets
                    "-x265-params", "keyint=30:min-keyint=30:scenecut=0:log-level=error",
                    "-c:a", "aac", "-ac", "2", str(path)], check=True, timeout=BOUND)
    return path


def tag(kind: int, ms: int, body: bytes) -> bytes:
    head = bytes([kind]) + len(body).to_bytes(3, "big") + (ms & 0xFFFFFF).to_bytes(3, "big")
    return head + bytes([ms >> 24 & 0xFF, 0, 0, 0]) + body + (11 + len(body)).to_bytes(4, "big")


def enhanced_flv(clip: Path) -> bytes:
    """The clip as FLV: HEVC in Enhanced RTMP video tags (SequenceStart with the hvcC, then
    CodedFrames with their composition offsets), AAC as usual."""
    tags = []
    with av.open(str(clip)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "hevc"
        tags.append((0, 9, bytes([0x80 | 1 << 4 | 0]) + b"hvc1" + bytes(video.codec_context.extradata)))
        tags.append((0, 8, b"\xaf\x00" + bytes(audio.codec_context.extradata)))
        for packet in container.demux(video, audio):
            if packet.size == 0 or packet.dts is None:
                continue
            ms = Fraction(packet.time_base) * 1000
            dts, pts = round(packet.dts * ms), round(packet.pts * ms)
            if packet.stream is video:
                frame_type = 1 if packet.is_keyframe else 2
                body = (bytes([0x80 | frame_type << 4 | 1]) + b"hvc1"
                        + (pts - dts).to_bytes(3, "big", signed=True) + bytes(packet))
                tags.append((dts, 9, body))
            else:
                tags.append((dts, 8, b"\xaf\x01" + bytes(packet)))
    configs, media = tags[:2], sorted(tags[2:], key=lambda t: t[0])
    shift = -min(0, media[0][0])  # B-frames: the first decode times are below zero
    timed = [(0, k, b) for _, k, b in configs] + [(ms + shift, k, b) for ms, k, b in media]
    header = b"FLV\x01\x05\x00\x00\x00\x09" + bytes(4)
    return header + b"".join(tag(kind, ms, body) for ms, kind, body in timed)


async def test_hevc_over_enhanced_rtmp_becomes_the_h264_ladder(tmp_path: Path) -> None:
    lib = librtmp()
    if lib is None:
        pytest.skip("librtmp.so.1 is not installed")
    clip = await asyncio.to_thread(hevc_clip, tmp_path / "hevc.mp4")
    flv = enhanced_flv(clip)
    store = tmp_path / "store"
    ingest = Ingest(StaticKeys({"hevc-key": "hevc0001"}), str(store),
                    Ports(free_port(), free_port()), config=SMALL)
    await ingest.start()
    try:
        url = f"rtmp://127.0.0.1:{ingest.rtmp.port}/live/hevc-key"
        assert await asyncio.wait_for(asyncio.to_thread(librtmp_publish, lib, url, flv, True), BOUND)
        master = await vod_master(store, "hevc0001")
    finally:
        await ingest.close()
    out = store / "vod" / "hevc0001"
    check_hls(out, tmp_path, SECONDS, segment_seconds=1.0)
    assert "avc1." in master.read_text() and "hvc1" not in master.read_text()
    joined = tmp_path / "v240.mp4"
    joined.write_bytes((out / "v240" / "init.mp4").read_bytes()
                       + (out / "v240" / "seg_00001.m4s").read_bytes())
    stream = ffprobe_json("-show_streams", str(joined))["streams"][0]
    assert (stream["codec_name"], stream["height"]) == ("h264", 240)
