"""The real publisher the ingest tests use: the ffmpeg CLI pushing a generated pattern and tone;
and PyAV to decode what reached a sink."""

from __future__ import annotations

import asyncio
import ctypes
import socket
import time
from itertools import pairwise
from pathlib import Path

import av

from tests.live.sinks import RecordingSink

BOUND = 60  # seconds: only ever a bound on a test's waits


def free_port(kind: socket.SocketKind = socket.SOCK_STREAM) -> int:
    """A loopback port free for TCP (or `kind`: SOCK_DGRAM for SRT) just now."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def vod_master(store: Path, video_id: str) -> Path:
    """The VOD master the ingest writes once a stream ends (BOUND at most)."""
    master = store / "vod" / video_id / "master.m3u8"
    for _ in range(int(BOUND / 0.2)):
        if master.exists():
            break
        await asyncio.sleep(0.2)
    return master


async def ffmpeg(target: str, seconds: float = 3, *, video: tuple[str, ...] = ("-tune", "zerolatency"),
                 audio_only: bool = False, muxer: str = "flv",
                 encoder: str = "libx264") -> asyncio.subprocess.Process:
    """ffmpeg publishing a test pattern and a tone, at real time, for `seconds` (FLV for RTMP,
    MPEG-TS for SRT); `video`: the encoder's options."""
    inputs = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"]
    codecs = ["-c:a", "aac", "-ac", "2", "-b:a", "64k"]
    if not audio_only:
        inputs = ["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", *inputs]
        codecs = ["-c:v", encoder, "-preset", "ultrafast", *video, "-g", "30", *codecs]
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


def check_stream(sink: RecordingSink, seconds: float, *, tail_lost: bool = False) -> None:
    """What a good 320x240 30 fps + 48 kHz stereo push of `seconds` must have delivered: decodable
    video of the right size, keyframes every 30 frames flagged, times rising. With `tail_lost`, its
    last few hundred milliseconds may be missing (an SRT caller in live mode closes without
    lingering, so what was still in flight is dropped)."""
    assert sink.starts == 1 and sink.ends == 1
    assert sink.audio is not None and (sink.audio.sample_rate, sink.audio.channels) == (48000, 2)
    video, audio = sink.packets_of("video"), sink.packets_of("audio")
    share = 0.6 if tail_lost else 1.0
    assert int(seconds * 30 * share) - 3 <= len(video) <= seconds * 30
    assert int(seconds * 48000 / 1024 * share) - 4 <= len(audio) <= seconds * 48000 / 1024 + 4
    frames = decoded_frames(sink)
    assert len(frames) == len(video) and {(f.width, f.height) for f in frames} == {(320, 240)}
    keyframes = [i for i, packet in enumerate(video) if packet.keyframe]
    assert keyframes[0] == 0 and {b - a for a, b in pairwise(keyframes)} <= {30}
    assert all(b.dts > a.dts for a, b in pairwise(video)) and all(p.pts >= p.dts for p in video)
    assert all(b.dts > a.dts for a, b in pairwise(audio))


def librtmp() -> ctypes.CDLL | None:
    """librtmp (Debian's librtmp1, which curl brings), the library OBS's RTMP output is a fork of;
    None where it is missing."""
    try:
        lib = ctypes.CDLL("librtmp.so.1")
    except OSError:
        return None
    lib.RTMP_Alloc.restype = ctypes.c_void_p
    for name in ("RTMP_Init", "RTMP_EnableWrite", "RTMP_Close", "RTMP_Free"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    lib.RTMP_SetupURL.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    lib.RTMP_Connect.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    lib.RTMP_ConnectStream.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.RTMP_Write.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.RTMP_LogSetLevel.argtypes = [ctypes.c_int]
    lib.RTMP_LogSetLevel(0)  # critical only: refusals are expected in tests
    return lib


def librtmp_publish(lib: ctypes.CDLL, url: str, flv: bytes, paced: bool = False) -> bool:
    """Publish an FLV file's tags with librtmp, as OBS does (blocking: run it in a thread);
    `paced`: each tag at its time, as a live encoder sends them."""
    rtmp = lib.RTMP_Alloc()
    lib.RTMP_Init(rtmp)
    target = ctypes.create_string_buffer(url.encode())  # librtmp keeps pointers into it
    try:
        if not lib.RTMP_SetupURL(rtmp, target):
            return False
        lib.RTMP_EnableWrite(rtmp)
        if not (lib.RTMP_Connect(rtmp, None) and lib.RTMP_ConnectStream(rtmp, 0)):
            return False
        started = time.monotonic()
        for piece in _flv_tags(flv):
            if paced:
                tag = piece[13:] if piece.startswith(b"FLV") else piece
                ms = int.from_bytes(tag[4:7], "big") | tag[7] << 24
                time.sleep(max(0.0, started + ms / 1000 - time.monotonic()))
            if lib.RTMP_Write(rtmp, piece, len(piece)) <= 0:
                return False
        return True
    finally:
        lib.RTMP_Close(rtmp)
        lib.RTMP_Free(rtmp)


def _flv_tags(flv: bytes) -> list[bytes]:
    """The FLV header with the first tag, then each further tag, each with its trailing size:
    RTMP_Write reads a tag header only at the start of a call."""
    pieces, start, pos = [], 0, 13
    while pos + 11 <= len(flv):
        pos += 11 + int.from_bytes(flv[pos + 1 : pos + 4], "big") + 4
        pieces.append(flv[start:pos])
        start = pos
    return pieces
