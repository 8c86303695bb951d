"""A 720p30 camera with the wall clock burned into its pictures, publishing over RTMP (bench_live).

    python -m loadtest.live_publisher [--kbps 3000] [--preset ultrafast] RTMP_URL [RTMP_URL ...]

It makes a picture every 1/30 s of wall time, burns the wall clock into it as it is made
(live_clock.py), and encodes it with x264 (zerolatency: out as soon as in) at that slot's
timestamp; one ffmpeg adds the audio and tees the FLV, unchanged, to every URL, so every peer gets
identical input. When the machine starves it, slots are skipped as a real encoder drops frames:
the stream's timestamps keep to the wall clock and no backlog piles up in front of the peers.
Runs until SIGTERM; then writes {"made": N, "dropped": N} to --counts.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import threading
import time
from pathlib import Path

import av

from loadtest import live_clock

WIDTH, HEIGHT, FPS = 1280, 720, 30


class Camera:
    def __init__(self, urls: list[str], kbps: int, preset: str) -> None:
        self.frames = live_clock.background(WIDTH, HEIGHT, 2 * FPS)
        tee = "|".join(f"[f=flv:onfail=ignore]{url}" for url in urls)
        self.ffmpeg = subprocess.Popen([
            "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning",
            "-fflags", "nobuffer", "-probesize", "32", "-analyzeduration", "0",
            "-thread_queue_size", "256", "-f", "flv", "-i", "pipe:0",
            "-re", "-thread_queue_size", "256", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
            "-map", "0:v", "-map", "1:a", "-c:v", "copy",
            "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000",
            "-flags", "+global_header", "-f", "tee", tee], stdin=subprocess.PIPE)
        self.container = av.open(self.ffmpeg.stdin, "w", format="flv")
        self.video = self.container.add_stream("libx264", rate=FPS)
        self.video.width, self.video.height, self.video.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        self.video.bit_rate = kbps * 1000
        self.video.options = {
            "preset": preset, "tune": "zerolatency", "g": str(FPS), "keyint_min": str(FPS),
            "sc_threshold": "0", "x264-params": f"vbv-maxrate={kbps}:vbv-bufsize={kbps // 2}"}
        self.stopping = threading.Event()
        self.made = 0
        self.dropped = 0  # slots skipped because this process fell behind real time

    def _picture(self, index: int) -> av.VideoFrame:
        planes = bytearray(self.frames[index % len(self.frames)])
        live_clock.draw(planes, WIDTH, HEIGHT, time.time_ns() // 1_000_000)
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        luma, view = WIDTH * HEIGHT, memoryview(planes)
        for plane, at, size in zip(frame.planes, (0, luma, luma * 5 // 4), (luma, luma // 4, luma // 4),
                                   strict=True):
            plane.update(view[at:at + size])
        frame.pts = index
        return frame

    def run(self) -> None:
        start = time.monotonic()
        index = 0
        try:
            while not self.stopping.is_set() and self.ffmpeg.poll() is None:
                wait = start + index / FPS - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                elif wait < -1 / FPS:  # behind: skip to the slot of now
                    now = int((time.monotonic() - start) * FPS)
                    self.dropped += now - index
                    index = now
                for packet in self.video.encode(self._picture(index)):
                    self.container.mux(packet)
                self.made += 1
                index += 1
        except (BrokenPipeError, ValueError, OSError):
            pass
        finally:
            try:
                self.container.close()
            except (BrokenPipeError, ValueError, OSError):
                pass
            self.ffmpeg.terminate()
            try:
                self.ffmpeg.wait(10)
            except subprocess.TimeoutExpired:
                self.ffmpeg.kill()


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
        args.counts.write_text(json.dumps({"made": camera.made, "dropped": camera.dropped}))


if __name__ == "__main__":
    main()
