"""A live stream for the tests: a generated clip published in real time into a LiveStream,
served over real HTTP from a thread with its own event loop (so synchronous tests, ffprobe and
Playwright can watch it while it runs)."""

from __future__ import annotations

import asyncio
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from aiohttp import web
from av.video.frame import PictureType

from origin.store import DirectoryStore
from packager.live.config import LiveConfig
from packager.live.media import AudioConfig, MediaPacket, StreamSink, VideoConfig
from packager.live.server import live_app
from packager.live.stream import LiveStream
from packager.output import DirectoryOutput
from packager.testclip import _pull_all, make_test_clip

# Small and quick, so real time holds on a shared two-core machine: two low rungs, ultrafast;
# both rungs kept whatever a busy neighbour does (the degrade path has a test of its own).
TEST_CONFIG = LiveConfig(rung_names=("v360", "v240"), preset="ultrafast", faster_presets=(),
                         max_lag=3.0, dvr_seconds=120.0, min_rungs=2)


@dataclass
class Publication:
    video: VideoConfig
    audio: AudioConfig
    packets: list[MediaPacket]


def publication(seconds: float, path: Path, width: int = 640, height: int = 360) -> Publication:
    """An FFmpeg test pattern and tone, as ingest would hand it over: configs and access units
    with millisecond times, in decode order."""
    return demuxed(make_test_clip(path, seconds=seconds, width=width, height=height))


def timed_clip(path: Path, times: list[float], rate: Fraction, width: int = 640,
               height: int = 360) -> Path:
    """A test pattern whose pictures are shown at `times` (seconds: any gaps, any rhythm, as a
    starved camera or a variable-rate publisher sends them; `rate` is what the encoder is told),
    keyframes every two seconds' worth of pictures as OBS makes them, over an unbroken tone."""
    seconds = times[-1] + 1 / float(rate)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx264", rate=rate)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.codec_context.time_base = Fraction(1, 1000)
        video.codec_context.gop_size = round(2 * rate)
        video.options = {"preset": "ultrafast", "crf": "23"}
        sound = out.add_stream("aac", rate=48000, layout="stereo")
        pictures = _pull_all([("testsrc2", f"size={width}x{height}:rate={len(times)}:duration=1")])
        tone = _pull_all([("sine", f"frequency=440:sample_rate=48000:duration={seconds}"),
                          ("aformat", "sample_fmts=fltp:channel_layouts=stereo")])
        heard = 0.0
        for at, picture in zip(times, pictures, strict=False):
            frame = picture.reformat(format="yuv420p")
            frame.pict_type = PictureType.NONE  # testsrc2 marks every picture a keyframe
            frame.pts, frame.time_base = round(at * 1000), Fraction(1, 1000)
            out.mux(video.encode(frame))
            while heard <= at and (chunk := next(tone, None)) is not None:
                heard = float(chunk.pts * chunk.time_base) + chunk.samples / 48000
                chunk.pts = None
                out.mux(sound.encode(chunk))
        out.mux(video.encode(None))
        for chunk in tone:
            chunk.pts = None
            out.mux(sound.encode(chunk))
        out.mux(sound.encode(None))
    return path


def demuxed(clip: Path) -> Publication:
    """A clip's configs and access units with millisecond times, in decode order."""
    with av.open(str(clip)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        vconf = VideoConfig(bytes(video.codec_context.extradata))
        aconf = AudioConfig(bytes(audio.codec_context.extradata), audio.sample_rate, 2)
        packets = []
        for packet in container.demux(video, audio):
            if packet.size == 0 or packet.dts is None:
                continue
            ms = Fraction(packet.time_base) * 1000
            packets.append(MediaPacket(
                "video" if packet.stream is video else "audio", round(packet.dts * ms),
                round(packet.pts * ms), bytes(packet), packet.is_keyframe))
    packets.sort(key=lambda p: p.dts)
    return Publication(vconf, aconf, packets)


async def publish(sink: StreamSink, source: Publication, until: float | None = None,
                  end: bool = True) -> None:
    """Each access unit at its time, as a publisher sends it; `until` seconds at most."""
    loop = asyncio.get_running_loop()
    await sink.start(source.video, source.audio)
    started = loop.time()
    for packet in source.packets:
        if until is not None and packet.dts / 1000 >= until:
            break
        await asyncio.sleep(max(0.0, started + packet.dts / 1000 - loop.time()))
        await sink.packet(packet)
    if end:
        await sink.end()


class LiveRig:
    """One stream, published and served on a thread of its own."""

    def __init__(self, source: Publication, root: Path, video_id: str = "live0001",
                 config: LiveConfig = TEST_CONFIG) -> None:
        self.source, self.video_id = source, video_id
        self.store = root
        self.stream = LiveStream(video_id, DirectoryOutput(root / "live" / video_id),
                                 vod_output=DirectoryOutput(root / "vod" / video_id), config=config)
        self.streams = {video_id: self.stream}
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self.published: Future | None = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def start(self) -> LiveRig:
        self._thread.start()
        self.url = self.call(self._serve())
        self.published = asyncio.run_coroutine_threadsafe(publish(self.stream, self.source),
                                                          self.loop)
        return self

    def call(self, coro: object, timeout: float = 60) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore

    async def _serve(self) -> str:
        # What memory no longer holds comes from the store, as at an origin.
        self.runner = web.AppRunner(live_app(self.streams, DirectoryStore(self.store)))
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return f"http://127.0.0.1:{port}/live/{self.video_id}"

    def get(self, path: str, timeout: float = 20) -> tuple[int, dict[str, str], bytes]:
        try:
            with urllib.request.urlopen(f"{self.url}/{path}", timeout=timeout) as resp:
                return resp.status, dict(resp.headers), resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def wait_published(self, timeout: float = 120) -> None:
        assert self.published is not None
        self.published.result(timeout)

    def stop(self) -> None:
        self.call(self.runner.cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def running(source: Publication, root: Path, **kwargs: object) -> Iterator[LiveRig]:
    rig = LiveRig(source, root, **kwargs).start()  # type: ignore[arg-type]
    try:
        yield rig
    finally:
        if rig.published is not None and not rig.published.done():
            rig.published.cancel()  # the publisher goes away mid-stream
            rig.call(rig.stream.end())
        rig.stop()
