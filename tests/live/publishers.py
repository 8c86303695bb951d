"""The real publisher the ingest tests use: the ffmpeg CLI pushing a generated pattern and tone;
and PyAV to decode what reached a sink."""

from __future__ import annotations

import asyncio

import av

from tests.live.sinks import RecordingSink

BOUND = 60  # seconds: only ever a bound on a test's waits


async def ffmpeg(target: str, seconds: float = 3, *, video: tuple[str, ...] = ("-tune", "zerolatency"),
                 audio_only: bool = False, muxer: str = "flv") -> asyncio.subprocess.Process:
    """ffmpeg publishing a test pattern and a tone, at real time, for `seconds` (FLV for RTMP,
    MPEG-TS for SRT)."""
    inputs = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    codecs = ["-c:a", "aac", "-ac", "2", "-b:a", "64k"]
    if not audio_only:
        inputs = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", *inputs]
        codecs = ["-c:v", "libx264", "-preset", "ultrafast", *video, "-g", "30", *codecs]
    return await asyncio.create_subprocess_exec(
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-re", *inputs, "-t", str(seconds),
        *codecs, "-f", muxer, target, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def finished(process: asyncio.subprocess.Process) -> int:
    await asyncio.wait_for(process.communicate(), BOUND)
    assert process.returncode is not None
    return process.returncode


def decoded_frames(sink: RecordingSink) -> list[av.VideoFrame]:
    assert sink.video is not None
    codec = av.CodecContext.create("h264", "r")
    codec.extradata = sink.video.avcc
    frames = []
    for packet in sink.packets_of("video"):
        frames += codec.decode(av.Packet(packet.data))
    return frames + codec.decode(None)
