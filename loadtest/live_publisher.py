"""A 720p30 camera with the wall clock burned into its pictures, publishing over RTMP (bench_live).

    python -m loadtest.live_publisher [--kbps 3000] [--preset ultrafast] RTMP_URL [RTMP_URL ...]

It makes a picture every 1/30 s of wall time, burns the wall clock into it as it is made
(live_clock.py), encodes it with x264 (zerolatency: out as soon as in) at that slot's
timestamp, with a tone in AAC, and muxes FLV once; the same bytes go to every URL, each through
its own queue and an ffmpeg relaying them unchanged, so every peer gets identical input and a
peer slow to read delays only its own copy. When the machine starves it, slots are skipped as a
real encoder drops frames: the stream's timestamps keep to the wall clock and no backlog piles up
in front of the peers.
Runs until SIGTERM; then writes {"made": N, "dropped": N} to --counts.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import queue
import signal
import struct
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
from av.video.frame import PictureType

from loadtest import live_clock

WIDTH, HEIGHT, FPS = 1280, 720, 30
AUDIO_RATE, AUDIO_FRAME = 48000, 1024


class Sender:
    """One peer's copy of the FLV bytes: a bounded queue and a thread writing it into an ffmpeg
    that relays it, unchanged (`-c copy`), to the peer's RTMP URL. A peer slow to read holds up
    only its own copy, never the camera nor the other peers."""

    LIMIT = 64 * 2**20  # bytes queued before the peer is given up on

    def __init__(self, url: str) -> None:
        self.url = url
        self.proc = subprocess.Popen([
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning",
            "-probesize", "100000", "-analyzeduration", "200000", "-f", "flv", "-i", "pipe:0",
            "-map", "0", "-c", "copy", "-f", "flv", url], stdin=subprocess.PIPE)
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self.queued = 0
        self.peak = 0
        self.failed = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def write(self, data: bytes) -> None:
        if self.failed:
            return
        if self.queued + len(data) > self.LIMIT:
            self.failed = True
            self.chunks.put(None)
            return
        self.queued += len(data)
        self.peak = max(self.peak, self.queued)
        self.chunks.put(data)

    def _run(self) -> None:
        assert self.proc.stdin is not None
        try:
            while (data := self.chunks.get()) is not None:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
                self.queued -= len(data)
        except (BrokenPipeError, OSError):
            self.failed = True
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def close(self) -> None:
        self.chunks.put(None)
        self.thread.join(5)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class FanOut(io.RawIOBase):
    """The file the FLV muxer writes: every byte to every sender."""

    def __init__(self, senders: list[Sender]) -> None:
        self.senders = senders

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # noqa: ANN001 - a bytes-like object, as io wants
        chunk = bytes(data)
        for sender in self.senders:
            sender.write(chunk)
        return len(chunk)


class Camera:
    def __init__(self, urls: list[str], kbps: int, preset: str) -> None:
        self.frames = live_clock.background(WIDTH, HEIGHT, 2 * FPS)
        self.senders = [Sender(url) for url in urls]
        self.container = av.open(FanOut(self.senders), "w", format="flv")
        self.video = self.container.add_stream("libx264", rate=FPS)
        self.video.width, self.video.height, self.video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        self.video.bit_rate = kbps * 1000
        self.video.options = {
            "preset": preset, "tune": "zerolatency", "g": str(FPS), "keyint_min": str(FPS),
            "sc_threshold": "0", "forced-idr": "1",
            "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}"}
        self.audio = self.container.add_stream("aac", rate=AUDIO_RATE)
        self.audio.layout, self.audio.bit_rate = "stereo", 128_000
        self.tone = self._tone()
        self.next_audio = 0  # the next audio frame, counted in frames of AUDIO_FRAME samples
        self.keyed = -1  # the second of the last forced IDR
        self.stopping = threading.Event()
        self.made = 0
        self.dropped = 0  # slots skipped because this process fell behind real time

    def _tone(self) -> bytes:
        """One AAC frame of a steady 375 Hz tone (8 whole periods a frame: every frame is alike
        once the encoder has settled), encoded once here and sent again for every frame: an
        AAC encode per frame would cost this camera more CPU than its pictures."""
        samples = [0.2 * math.sin(2 * math.pi * 375 * i / AUDIO_RATE) for i in range(AUDIO_FRAME)]
        pcm = struct.pack(f"{AUDIO_FRAME}f", *samples)
        encoder = av.CodecContext.create("aac", "w")
        encoder.sample_rate, encoder.layout, encoder.format = AUDIO_RATE, "stereo", "fltp"
        encoder.bit_rate = 128_000
        packets = []
        for index in range(16):
            frame = av.AudioFrame(format="fltp", layout="stereo", samples=AUDIO_FRAME)
            for plane in frame.planes:
                plane.update(pcm)
            frame.sample_rate, frame.pts = AUDIO_RATE, index * AUDIO_FRAME
            packets += encoder.encode(frame)
        return bytes(packets[-1])

    def _picture(self, index: int) -> av.VideoFrame:
        planes = bytearray(self.frames[index % len(self.frames)])
        live_clock.draw(planes, WIDTH, HEIGHT, time.time_ns() // 1_000_000)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        luma, view = WIDTH * HEIGHT, memoryview(planes)
        for plane, at, size in zip(frame.planes, (0, luma, luma * 5 // 4), (luma, luma // 4, luma // 4),
                                   strict=True):
            plane.update(view[at:at + size])
        frame.pts = index
        if index // FPS != self.keyed:  # an IDR each second of wall time, as OBS's keyframe
            self.keyed = index // FPS   # interval: dropped pictures never stretch a GOP
            frame.pict_type = PictureType.I
        return frame

    def _sound(self, until_slot: int) -> None:
        """Audio up to the end of video slot `until_slot`, without a gap where pictures were
        dropped: an encoder (OBS, ffmpeg) never drops sound."""
        end = (until_slot + 1) * AUDIO_RATE // FPS // AUDIO_FRAME
        while self.next_audio < end:
            packet = av.Packet(self.tone)
            packet.pts = packet.dts = self.next_audio * AUDIO_FRAME
            packet.time_base = Fraction(1, AUDIO_RATE)
            packet.stream = self.audio
            self.container.mux(packet)
            self.next_audio += 1

    def run(self) -> None:
        start = time.monotonic()
        index = 0
        try:
            while not self.stopping.is_set() and not all(s.failed for s in self.senders):
                wait = start + index / FPS - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -1 / FPS:  # behind: skip to the slot of now
                    now = int((time.monotonic() - start) * FPS)
                    self.dropped += now - index
                    index = now
                for packet in self.video.encode(self._picture(index)):
                    self.container.mux(packet)
                self._sound(index)
                self.made += 1
                index += 1
        finally:
            try:
                self.container.close()
            except (ValueError, OSError):
                pass
            for sender in self.senders:
                sender.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("urls", nargs="+")
    parser.add_argument("--kbps", type=int, default=3000)
    parser.add_argument("--preset", default="ultrafast")
    parser.add_argument("--counts", type=Path, help="where to write the counts when stopped")
    args = parser.parse_args()
    camera = Camera(args.urls, args.kbps, args.preset)
    signal.signal(signal.SIGTERM, lambda *_: camera.stopping.set())
    try:
        camera.run()
    except KeyboardInterrupt:
        pass
    if args.counts:
        args.counts.write_text(json.dumps({
            "made": camera.made, "dropped": camera.dropped,
            "queued_peak": {s.url.rpartition("/")[0]: s.peak for s in camera.senders},
            "failed": [s.url.rpartition("/")[0] for s in camera.senders if s.failed]}))


if __name__ == "__main__":
    main()
