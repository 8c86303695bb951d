"""CPU ingest spends receiving a push: `python -m packager.live.bench_ingest [--seconds 20]
[--mbps 6.4] [--protocol rtmp|srt]`. Encodes a noisy 720p30 clip once (ffmpeg), then has ffmpeg
push it at real time with `-c copy` (FLV over RTMP, or MPEG-TS over SRT) into an in-process
server whose sink only counts, and prints this process's CPU seconds (user + system) and its
children's: the pushing ffmpeg, and for SRT also the remuxing ffmpeg listener."""

from __future__ import annotations

import argparse
import asyncio
import resource
import subprocess
import tempfile
from pathlib import Path

from packager.live.media import AudioConfig, MediaPacket, VideoConfig
from packager.live.rtmp import RtmpServer
from packager.live.srt import SrtServer


class CountingSink:
    def __init__(self) -> None:
        self.packets = 0
        self.bytes = 0
        self.done = asyncio.Event()

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        pass

    async def packet(self, packet: MediaPacket) -> None:
        self.packets += 1
        self.bytes += len(packet.data)

    async def end(self) -> None:
        self.done.set()


def make_clip(path: Path, seconds: float, mbps: float) -> None:
    rate = f"{mbps * 1000:.0f}k"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y",
         "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30,noise=alls=12:allf=t",
         "-f", "lavfi", "-i", "sine=sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast", "-b:v", rate, "-maxrate", rate, "-bufsize", rate,
         "-g", "60", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-f", "flv", str(path)],
        check=True)


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, children.ru_utime + children.ru_stime


async def push(path: Path, protocol: str) -> tuple[CountingSink, float, float]:
    sink = CountingSink()

    async def authorize(app: str, key: str) -> CountingSink:
        return sink

    server = RtmpServer(authorize, port=0) if protocol == "rtmp" else SrtServer(authorize, port=0)
    await server.start()
    target = (["-f", "flv", f"rtmp://127.0.0.1:{server.port}/live/bench"] if protocol == "rtmp" else
              ["-f", "mpegts", f"srt://127.0.0.1:{server.port}?streamid=publish:bench"])
    try:
        own, children = cpu_seconds()
        ffmpeg = await asyncio.create_subprocess_exec(
            "ffmpeg", "-nostdin", "-loglevel", "error", "-re", "-i", str(path), "-c", "copy", *target)
        await ffmpeg.wait()
        await asyncio.wait_for(sink.done.wait(), 30)
    finally:
        await server.close()
    own_after, children_after = cpu_seconds()
    return sink, own_after - own, children_after - children


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--mbps", type=float, default=6.4)
    parser.add_argument("--protocol", choices=("rtmp", "srt"), default="rtmp")
    parser.add_argument("--clip", type=Path, help="push this file (made first if missing)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip or Path(tmp) / "push.flv"
        if not clip.exists():
            make_clip(clip, args.seconds, args.mbps)
        size = clip.stat().st_size
        sink, own, children = asyncio.run(push(clip, args.protocol))
    print(f"{args.protocol}: pushed {size * 8 / args.seconds / 1e6:.2f} Mb/s for {args.seconds:.0f} s: "
          f"{sink.packets} packets, {sink.bytes / 1e6:.1f} MB to the sink; "
          f"ingest process CPU {own:.2f} s ({own / args.seconds * 100:.1f} % of one core), "
          f"ffmpeg children {children:.2f} s")


if __name__ == "__main__":
    main()
