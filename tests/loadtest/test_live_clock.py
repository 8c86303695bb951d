"""The clock bench_live burns into its publisher's pictures is read back by the very reader the
benchmark's page runs (loadtest/live_clock.js, under node), after a real x264 encode and decode,
at a publisher's bitrate and at the ladder's starved low end, and from the lowest rung's size."""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import pytest

from loadtest import live_clock

READER = Path(live_clock.__file__).with_name("live_clock.js")
CANVAS = (640, 360)  # the size the benchmark's page draws every picture at
START = 2**32 - 500  # the clock wraps (ms modulo 2**32) within the clip


def encode_decode(width: int, height: int, kbps: int, clocks: list[int]) -> list[bytes]:
    """Pictures with `clocks` burned in, through libx264 at `kbps` and back, as RGBA at CANVAS."""
    frames = live_clock.background(width, height, len(clocks))
    codec = av.CodecContext.create("libx264", "w")
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, 30)
    codec.bit_rate = kbps * 1000
    codec.options = {"preset": "veryfast", "tune": "zerolatency", "g": "30",
                     "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}"}
    packets = []
    for index, (picture, ms) in enumerate(zip(frames, clocks, strict=True)):
        planes = bytearray(picture)
        live_clock.draw(planes, width, height, ms)
        frame = av.VideoFrame(width, height, "yuv420p")
        luma = width * height
        for plane, data in zip(frame.planes, (planes[:luma], planes[luma:luma * 5 // 4],
                                              planes[luma * 5 // 4:]), strict=True):
            plane.update(bytes(data))
        frame.pts = index
        packets += codec.encode(frame)
    packets += codec.encode(None)
    decoder = av.CodecContext.create("h264", "r")
    pictures = []
    for packet in packets:
        for decoded in decoder.decode(packet):
            rgba = decoded.reformat(width=CANVAS[0], height=CANVAS[1], format="rgba")
            pictures.append(bytes(rgba.planes[0])[: CANVAS[0] * CANVAS[1] * 4])
    return pictures


def read_with_page_reader(pictures: list[bytes], tmp_path: Path) -> list[int | None]:
    blob = tmp_path / "pictures.rgba"
    blob.write_bytes(b"".join(pictures))
    script = f"""
    const {{readClock}} = require({json.dumps(str(READER))});
    const buf = require("fs").readFileSync({json.dumps(str(blob))});
    const size = {CANVAS[0] * CANVAS[1] * 4}, out = [];
    for (let at = 0; at < buf.length; at += size)
      out.push(readClock(buf.subarray(at, at + size), {CANVAS[0]}, {CANVAS[1]}));
    console.log(JSON.stringify(out));
    """
    done = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize(("width", "height", "kbps"), [
    (1280, 720, 3000),  # the benchmark's publisher
    (1280, 720, 250),   # far below any ladder's top rung: blocky, and still read
    (640, 360, 150),    # the ladder's lowest rung, starved
])
def test_the_burned_clock_reads_back_after_h264(width: int, height: int, kbps: int,
                                                 tmp_path: Path) -> None:
    clocks = [(START + 33 * i) % 2**32 for i in range(30)]
    pictures = encode_decode(width, height, kbps, clocks)
    assert len(pictures) == len(clocks)
    assert read_with_page_reader(pictures, tmp_path) == clocks


def test_a_picture_without_the_clock_reads_as_nothing(tmp_path: Path) -> None:
    plain = [live_clock.background(*CANVAS, 1)[0]]
    codec = av.VideoFrame(*CANVAS, "yuv420p")
    luma = CANVAS[0] * CANVAS[1]
    for plane, data in zip(codec.planes, (plain[0][:luma], plain[0][luma:luma * 5 // 4],
                                          plain[0][luma * 5 // 4:]), strict=True):
        plane.update(data)
    rgba = bytes(codec.reformat(format="rgba").planes[0])
    assert read_with_page_reader([rgba], tmp_path) == [None]
