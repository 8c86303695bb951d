"""A live stream: ingest's StreamSink in, LL-HLS out, from memory.

The transcoder's threads hand every init segment and part to the event loop
(`call_soon_threadsafe`); there each rendition's Timeline grows and one `Changes` wakes whoever
waits on the stream (blocking playlist reloads, preload-hinted parts): no polling anywhere, and a
waiting viewer is answered in the same loop iteration the part arrives in. Completed segments,
init segments, a plain live playlist and the master also go to the Output (the object store), on
a writer thread of their own, so a slow store never delays a part.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from packager import cmaf
from packager.hls import START_BITRATE
from packager.ladder import AUDIO_NAME
from packager.live.config import Cadence, LiveConfig
from packager.live.encode import LiveMetrics
from packager.live.media import AudioConfig, MediaPacket, VideoConfig
from packager.live.playlist import Part, Report, Segment, Timeline
from packager.live.transcoder import Continuation, Transcoder, Variant
from packager.live.vod import VodRecorder
from packager.output import Output

log = logging.getLogger("reel.live")


class Changes:
    """One evented primitive per stream: `notify` wakes every waiter, who re-checks what it
    waits for. The event is replaced on every change, so a waiter never sees a stale set."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def until(self, ready: Callable[[], bool], within: float) -> bool:
        """Whether `ready()` became true within `within` seconds."""
        try:
            async with asyncio.timeout(within):
                while not ready():
                    await self._event.wait()
        except TimeoutError:
            return ready()
        return True


@dataclass
class Rendition:
    variant: Variant
    timeline: Timeline
    init: bytes | None = None
    dropped: bool = False  # the transcoder gave it up to keep real time

    @property
    def name(self) -> str:
        return self.variant.name


@dataclass
class _Store:
    """Writes to the Output, in order, off the event loop."""

    output: Output | None
    pool: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(
        1, thread_name_prefix="live-store"))

    def write(self, name: str, data: bytes) -> None:
        if self.output is not None:
            self.pool.submit(self.output.write, name, data).add_done_callback(_log_failure)

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _log_failure(future: Future) -> None:
    if future.exception() is not None:
        log.error("live store write failed", exc_info=future.exception())


class LiveStream:
    """Implements packager.live.media.StreamSink for one published stream."""

    def __init__(self, video_id: str, output: Output | None = None, *,
                 vod_output: Output | None = None, config: LiveConfig | None = None,
                 metrics: LiveMetrics | None = None) -> None:
        """`output`: where `live/{video_id}/` goes; `vod_output`: `vod/{video_id}/`, the video
        the stream becomes when it ends."""
        self.video_id = video_id
        self.config = config or LiveConfig()
        self.metrics = metrics or LiveMetrics(CollectorRegistry())
        self.store = _Store(output)
        self.vod_output = vod_output
        self.vod_store = _Store(vod_output)
        self.vod = VodRecorder(self.vod_store.write) if vod_output is not None else None
        self.renditions: dict[str, Rendition] = {}
        self.cadence: Cadence | None = None
        self.master: str | None = None
        self.ended = False
        self.started_at = 0.0
        self._inits: dict[str, bytes] = {}
        self._transcoder: Transcoder | None = None
        self._done: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.changes: Changes | None = None
        self._version = 0  # of what the playlists show: one more at every change
        self._rendered: dict[tuple[str, bool], tuple[int, str]] = {}
        self._continuation: Continuation | None = None  # where a paused stream goes on from
        self.paused = False  # its publisher went; another may continue it (`resume`)

    # --- StreamSink ------------------------------------------------------------------------------

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        self._loop = asyncio.get_running_loop()
        self.changes, self._done = Changes(), asyncio.Event()
        self.started_at = time.time()
        self._transcoder = Transcoder(self.video_id, video, audio, self.config, self,
                                      self.metrics, thumbs=self.vod_output)
        self._transcoder.start()

    async def pause(self) -> None:
        """The publisher went, and another may continue the stream: everything it sent is
        encoded, each rendition's last segment closed, and the encoders are released (nothing
        is buffered while the stream waits). Players keep the playlists, without ENDLIST."""
        if self._transcoder is None or self._done is None or self.ended or self.paused:
            return
        self.paused = True
        self._transcoder.finish(final=False)
        await self._done.wait()

    def resumable(self, video: VideoConfig | None, audio: AudioConfig | None) -> bool:
        """Whether a publisher with these tracks can continue this paused stream."""
        cont = self._continuation
        return (self.paused and cont is not None and video is not None and bool(cont.renditions)
                and cont.audio == (audio is not None))

    async def resume(self, video: VideoConfig | None, audio: AudioConfig | None) -> None:
        """A new publisher continues the paused stream: the same rungs and cadence, media times
        and segment numbers going on, a discontinuity and a new wall clock in the playlists."""
        if not self.resumable(video, audio):
            raise RuntimeError("this publisher's tracks cannot continue the stream")
        self.paused, self._done = False, asyncio.Event()
        self._transcoder = Transcoder(self.video_id, video, audio, self.config, self,
                                      self.metrics, thumbs=self.vod_output,
                                      continuation=self._continuation)
        self._transcoder.start()

    async def packet(self, packet: MediaPacket) -> None:
        assert self._transcoder is not None, "start() first"
        if self.ended or not self._transcoder.is_alive():
            raise RuntimeError("live transcoding has stopped")  # ingest drops the publisher
        self._transcoder.feed(packet)

    async def end(self) -> None:
        if self._transcoder is None or self._done is None or self.ended:
            return
        loop = asyncio.get_running_loop()
        if self.paused:  # its encoders are gone (or going): only the end remains to write
            await self._done.wait()
            thumbs = self._continuation.thumbs if self._continuation else None
            end = self._continuation.seconds if self._continuation else 0.0
            if thumbs is not None and end > 0:
                await loop.run_in_executor(None, thumbs.finish, end)
            self._ended()
        else:
            self._transcoder.finish()
            await self._done.wait()
        await loop.run_in_executor(None, self.store.close)
        await loop.run_in_executor(None, self.vod_store.close)
        self.metrics.forget(self.video_id, list(self.renditions))

    # --- from the transcoder's threads (Events) --------------------------------------------------

    def _call(self, method: Callable, *args: object) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(method, *args)

    def started(self, cadence: Cadence, wall_start: float, variants: list[Variant]) -> None:
        self._call(self._started, cadence, wall_start, variants)

    def init(self, name: str, data: bytes) -> None:
        self._call(self._init, name, data)

    def part(self, name: str, part: Part) -> None:
        self._call(self._part, name, part)

    def dropped(self, name: str) -> None:
        self._call(self._dropped, name)

    def chunk(self, name: str, msn: int, index: int, data: bytes) -> None:
        self._call(self._chunk, name, msn, index, data)

    def segment(self, name: str, fragment: cmaf.Fragment, duration: float) -> None:
        if self.vod is not None:
            self._call(self.vod.segment, name, fragment, duration)

    def finished(self, continuation: Continuation | None) -> None:
        self._call(self._finished, continuation)

    # --- on the loop -----------------------------------------------------------------------------

    def _notify(self) -> None:
        assert self.changes is not None
        self._version += 1
        self.changes.notify()

    def _started(self, cadence: Cadence, wall_start: float, variants: list[Variant]) -> None:
        if self.renditions:  # a publisher came back: the same renditions go on
            for rendition in self.renditions.values():
                rendition.timeline.discontinue(wall_start)
            self._notify()
            return
        self.cadence = cadence
        for variant in variants:
            timeline = Timeline(cadence, self.config, wall_start)
            self.renditions[variant.name] = Rendition(variant, timeline, self._inits.get(variant.name))
        self._notify()

    def _init(self, name: str, data: bytes) -> None:
        if self._inits.get(name) == data:
            return  # a publisher that came back: its encoders write the same parameter sets
        if name in self._inits:
            log.warning("init segment changed on resume", extra={"stream": self.video_id,
                                                                  "rendition": name})
        self._inits[name] = data
        if name in self.renditions:
            self.renditions[name].init = data
        self.store.write(f"{name}/init.mp4", data)
        if self.vod is not None:
            self.vod.init(name, data)

    def _part(self, name: str, part: Part) -> None:
        rendition = self.renditions[name]
        self._stored(rendition, rendition.timeline.add(part))
        if self.master is None and all(r.timeline.segments for r in self.renditions.values()):
            self._write_master()
        self._notify()

    def _chunk(self, name: str, msn: int, index: int, data: bytes) -> None:
        self.renditions[name].timeline.grow(msn, index, data)
        assert self.changes is not None
        self.changes.notify()  # not a new playlist (a part is listed once complete): no _version

    def _dropped(self, name: str) -> None:
        self.renditions[name].dropped = True
        self._write_master()
        self._notify()

    def _stored(self, rendition: Rendition, segment: Segment | None) -> None:
        """A completed segment to the store, with the plain playlist that lists it."""
        if segment is not None:
            assert segment.data is not None
            self.store.write(f"{rendition.name}/{segment.uri}", segment.data)
            self.store.write(f"{rendition.name}/index.m3u8",
                             rendition.timeline.render_plain().encode())

    def _finished(self, continuation: Continuation | None) -> None:
        """The transcoder is done: the stream ends, or waits for its next publisher."""
        for rendition in self.renditions.values():  # the last parts may not close a segment
            self._stored(rendition, rendition.timeline.seal())
        if not self.paused:
            self._ended()
            return
        self._continuation = continuation
        for rendition in self.renditions.values():
            rendition.timeline.away = True
        assert self._done is not None
        self._done.set()
        self._notify()

    def _ended(self) -> None:
        self.ended = True
        for rendition in self.renditions.values():
            rendition.timeline.ended = True
            self.store.write(f"{rendition.name}/index.m3u8",
                             rendition.timeline.render_plain().encode())
        if self.vod is not None:
            self.vod.finish([r.variant for r in self.renditions.values() if not r.dropped])
        assert self._done is not None
        self._done.set()
        self._notify()

    def _write_master(self) -> None:
        self.master = master_playlist([r.variant for r in self.renditions.values() if not r.dropped])
        self.store.write("master.m3u8", self.master.encode())

    @property
    def resumable_tracks(self) -> bool:
        """Whether another publisher could continue it: it has pictures (a stream of sound
        alone has no frame grid to go on from)."""
        return any(name != AUDIO_NAME for name in self.renditions)

    def duration(self) -> float:
        """Seconds of media made so far (the VOD's length), else of wall clock since the start."""
        if self.vod is not None and self.vod.segments:
            return max(sum(s.duration for s in segments) for segments in self.vod.segments.values())
        return time.time() - self.started_at if self.started_at else 0.0

    # --- for the server ----------------------------------------------------------------------------

    def reports(self, name: str) -> list[Report]:
        """Where every other rendition is, for EXT-X-RENDITION-REPORT."""
        reports = []
        for other in self.renditions.values():
            last = other.timeline.last()
            if other.name != name and not other.dropped and last is not None:
                reports.append(Report(f"../{other.name}/index.m3u8", *last))
        return reports

    def playlist(self, name: str, skip: bool = False) -> str:
        """The rendition's playlist now. Rendered once per change of the stream, however many
        viewers ask for it (a two-hour window is thousands of lines)."""
        cached = self._rendered.get((name, skip))
        if cached is not None and cached[0] == self._version:
            return cached[1]
        text = self.renditions[name].timeline.render(skip, self.reports(name))
        self._rendered[(name, skip)] = (self._version, text)
        return text


def master_playlist(variants: list[Variant]) -> str:
    """The live master: declared rates (nothing measured yet), audio as a rendition group; first
    the best rung fitting START_BITRATE, where players that take the first variant start."""
    audio = next((v for v in variants if v.name == AUDIO_NAME), None)
    videos = sorted((v for v in variants if v.name != AUDIO_NAME), key=lambda v: -v.height)
    extra = audio.peak_kbps if audio else 0
    fitting = [v for v in videos if (v.kbps + extra) * 1000 <= START_BITRATE]
    if fitting:
        videos.remove(fitting[0])
        videos.insert(0, fitting[0])
    lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
    if audio is not None and videos:
        lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Main",LANGUAGE="und",'
                     f'DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="{AUDIO_NAME}/index.m3u8"')
    for v in videos:
        codecs = f"{v.codecs},{audio.codecs}" if audio else v.codecs
        lines.append(f"#EXT-X-STREAM-INF:BANDWIDTH={(v.peak_kbps + extra) * 1000},"
                     f"AVERAGE-BANDWIDTH={(v.kbps + extra) * 1000},CODECS=\"{codecs}\","
                     f"RESOLUTION={v.width}x{v.height},FRAME-RATE={v.frame_rate:.3f}"
                     + (',AUDIO="audio"' if audio else ""))
        lines.append(f"{v.name}/index.m3u8")
    if not videos and audio is not None:
        lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={audio.peak_kbps * 1000},CODECS="{audio.codecs}"',
                  f"{AUDIO_NAME}/index.m3u8"]
    return "\n".join(lines) + "\n"
