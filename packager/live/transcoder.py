"""Decode once, encode every rung, in real time: the thread between ingest's packets and the
encoders.

Packets arrive from the event loop (`feed`, never blocking it). The first pictures tell the frame
rate, hence the cadence of parts and segments; the first picture's size chooses the ladder.
Every picture is placed on the stream's grid (segment, part) by its timestamp and handed to each
lane; a part the publisher left without a picture starts with the last one held (`_fill`), so
every part spans its grid interval. Falling behind is answered, never queued: a picture that
finds a lane's queue full is dropped for that lane (never a part's first: that starts the part
on the grid, and a segment's first is the IDR every rung cuts at); at each
segment start a lane that dropped or lags takes a faster preset, and when the fastest is not
enough the top rung is dropped.
"""

from __future__ import annotations

import logging
import queue
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from functools import partial
from typing import Protocol

import av

from packager import cmaf
from packager.ladder import AUDIO_NAME, Rendition, choose
from packager.lanes import LaneThread
from packager.live.config import MAX_GAP, VIDEO_TIMESCALE, Cadence, LiveConfig, snap_rate
from packager.live.encode import LiveAudioLane, LiveMetrics, LiveVideoLane, Tick
from packager.live.media import AudioConfig, MediaPacket, VideoConfig
from packager.live.playlist import Part
from packager.live.track import SegmentDone
from packager.output import Output
from packager.thumbs import Thumbnails

log = logging.getLogger("reel.live")

RATE_SAMPLES = 5  # pictures read before the frame rate is known (~150 ms, at the start only)
LANE_DEPTH = 8  # pictures a lane may have waiting before new ones are dropped for it
MS = Fraction(1, 1000)
DECODE_LAG = 3  # max_lags behind at the decoder before pictures are skipped to a keyframe


@dataclass(frozen=True)
class Variant:
    """One rendition as the playlists describe it."""

    name: str
    codecs: str
    width: int = 0
    height: int = 0
    kbps: int = 0
    peak_kbps: int = 0
    frame_rate: float = 0.0


@dataclass(frozen=True)
class Continuation:
    """Where a stream stands when its publisher goes, for the next publisher to go on from:
    the same cadence and rungs (so the same init segments), the next frame on the grid and the
    next segment number (so media times and sequence numbers go on without a hole)."""

    cadence: Cadence
    renditions: tuple[Rendition, ...]  # the rungs still encoded (none dropped meanwhile)
    audio: bool
    frame_index: int  # the next picture's index on the stream's frame grid
    msn: int  # the next segment's number
    thumbs: Thumbnails | None = None  # the poster and storyboard, gathering on
    audio_end: int | None = None  # where the sound ended (samples): the next goes on from there

    @property
    def seconds(self) -> float:
        """Where the next picture starts on the stream's timeline."""
        return self.frame_index * self.cadence.frame_ticks / VIDEO_TIMESCALE


class Events(Protocol):
    """What the transcoder reports, called from its threads; LiveStream forwards them to its loop."""

    def started(self, cadence: Cadence, wall_start: float, variants: list[Variant]) -> None: ...
    def init(self, name: str, data: bytes) -> None: ...
    def part(self, name: str, part: Part) -> None: ...
    def segment(self, name: str, fragment: cmaf.Fragment, duration: float) -> None: ...
    def chunk(self, name: str, msn: int, index: int, data: bytes) -> None: ...
    def dropped(self, name: str) -> None: ...
    def finished(self, continuation: Continuation | None) -> None: ...


class Governor:
    """Keeps a stream at real time: reviews the lanes at each segment start. A lane behind at
    STRIKES reviews in a row (it dropped pictures, or its newest picture came out more than
    `max_lag` after it arrived) takes the next faster preset; one behind at the fastest makes
    the top rung go, down to `min_rungs`. Brief hiccups (a neighbour's burst of CPU) do nothing."""

    STRIKES = 2

    def __init__(self, stream_id: str, config: LiveConfig, metrics: LiveMetrics,
                 events: Events) -> None:
        self.stream_id, self.config, self.metrics, self.events = stream_id, config, metrics, events
        self.delays: dict[str, float] = {}  # newest picture's delay, per lane (set by the lanes)
        self._dropped: dict[str, int] = {}  # since the last review
        self._strikes: dict[str, int] = {}
        self.gone: set[str] = set()  # rungs dropped to keep real time

    def dropped(self, name: str) -> None:
        self._dropped[name] = self._dropped.get(name, 0) + 1
        self.metrics.dropped.labels(self.stream_id, name).inc()

    def review(self, lanes: list[LaneThread]) -> None:
        alive = [t for t in lanes if t.is_alive()]
        exhausted = False
        for thread in alive:
            lane: LiveVideoLane = thread.lane  # type: ignore[assignment]
            name = lane.rendition.name
            behind = self._dropped.get(name, 0) > 0 or self.delays.get(name, 0.0) > self.config.max_lag
            self._strikes[name] = self._strikes.get(name, 0) + 1 if behind else 0
            if self._strikes[name] < self.STRIKES:
                continue
            self._strikes[name] = 0
            if lane.can_go_faster:
                lane.faster()
                self._step("preset", name)
            else:
                exhausted = True
        if exhausted and len(alive) > self.config.min_rungs:
            alive[0].stop()
            self.gone.add(alive[0].lane.rendition.name)
            self._step("drop_rung", alive[0].lane.rendition.name)
            self.events.dropped(alive[0].lane.rendition.name)
        self._dropped.clear()

    def _step(self, action: str, name: str) -> None:
        self.metrics.degraded.labels(self.stream_id, action).inc()
        log.warning("live stream behind real time", extra={
            "stream": self.stream_id, "rendition": name, "action": action})


class Transcoder(threading.Thread):
    """One stream's decoding thread: owns the decoders, the lanes (threads of their own), the
    audio encoder and the Governor; reports through `events`, from whichever thread made it."""

    def __init__(self, stream_id: str, video: VideoConfig | None, audio: AudioConfig | None,
                 config: LiveConfig, events: Events, metrics: LiveMetrics,
                 thumbs: Output | None = None, continuation: Continuation | None = None) -> None:
        """`continuation`: where the stream's previous publisher left it, to go on from."""
        super().__init__(name=f"live-{stream_id}", daemon=True)
        self.continuation = continuation
        self._origin = (continuation.frame_index, continuation.msn) if continuation else (0, 0)
        self.stream_id, self.config, self.events, self.metrics = stream_id, config, events, metrics
        self._queue: queue.SimpleQueue[tuple[MediaPacket, float, float] | None] = queue.SimpleQueue()
        self.video_decoder = _decoder(video.codec, video.avcc) if video else None
        self.audio_decoder = _decoder("aac", audio.asc) if audio else None
        self.cadence: Cadence | None = None
        self.lanes: list[LaneThread] = []
        self.audio: LiveAudioLane | None = None
        self._t0: int | None = None  # ms: the first picture's presentation time
        self._first_arrival: tuple[int, float] | None = None  # (dts ms, wall time)
        self._held: list[tuple[str, av.frame.Frame, float]] = []
        self._last_index = self._origin[0] - 1
        self._skew = 0  # slots the publisher's clock jumped by, taken out
        self._skipping = False  # decoding too far behind: waiting for the next keyframe
        self._segment = -1
        self._last_frame: av.VideoFrame | None = None
        self.governor = Governor(stream_id, config, metrics, events)
        self.thumbs_output = thumbs  # where poster and storyboard go, at the end
        self.thumbs: Thumbnails | None = continuation.thumbs if continuation else None
        self._final = True

    # --- from the event loop -------------------------------------------------------------------

    def feed(self, packet: MediaPacket) -> None:
        self._queue.put((packet, time.monotonic(), time.time()))

    def finish(self, final: bool = True) -> None:
        """No more packets from this publisher. `final`: the stream ends (poster and storyboard
        are written); else it may go on from `finished`'s Continuation."""
        self._final = final
        self._queue.put(None)

    # --- on the thread ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            while (item := self._queue.get()) is not None:
                self._handle(*item)
            self._flush()
        except Exception:
            log.exception("live transcoding failed", extra={"stream": self.stream_id})
        finally:
            for lane in self.lanes:
                if lane.is_alive():
                    lane.close_quietly()
            self.events.finished(self._continues())

    def _continues(self) -> Continuation | None:
        if self.cadence is None or not self.lanes:
            return self.continuation  # nothing was made: go on from where the last one left
        rungs = tuple(t.lane.rendition for t in self.lanes  # type: ignore[attr-defined]
                      if t.lane.rendition.name not in self.governor.gone)  # type: ignore[attr-defined]
        return Continuation(self.cadence, rungs, self.audio is not None, self._last_index + 1,
                            max(self._segment + 1, self._origin[1]), self.thumbs,
                            self.audio.written if self.audio is not None and self.audio.written
                            else None)

    def _handle(self, packet: MediaPacket, arrival: float, wall: float) -> None:
        if self._first_arrival is None:
            self._first_arrival = (packet.pts, wall)
        decoder = self.video_decoder if packet.kind == "video" else self.audio_decoder
        if decoder is None or (packet.kind == "video" and self._skip(packet, arrival)):
            return
        av_packet = av.Packet(packet.data)
        av_packet.pts, av_packet.dts, av_packet.time_base = packet.pts, packet.dts, MS
        try:
            frames = decoder.decode(av_packet)
        except av.error.InvalidDataError:
            return  # a damaged access unit: skipped, as players do
        for frame in frames:
            self._frame(packet.kind, frame, arrival)

    def _skip(self, packet: MediaPacket, arrival: float) -> bool:
        """Whether to skip this picture undecoded: decoding itself is so far behind real time
        that only jumping to the next keyframe catches up (pictures in between reference
        what came before them, so it is all of them or none)."""
        if packet.keyframe:
            self._skipping = False
        elif self._skipping or time.monotonic() - arrival > DECODE_LAG * self.config.max_lag:
            self._skipping = True
            self.metrics.dropped.labels(self.stream_id, "source").inc()
        return self._skipping

    def _frame(self, kind: str, frame: av.frame.Frame, arrival: float) -> None:
        if self.cadence is None:
            self._held.append((kind, frame, arrival))
            if self._ready():
                self._begin()
            return
        if kind == "video":
            self._video(frame, arrival)  # type: ignore[arg-type]
        else:
            self._audio(frame)  # type: ignore[arg-type]

    def _ready(self) -> bool:
        pictures = sum(1 for kind, _, _ in self._held if kind == "video")
        return pictures >= RATE_SAMPLES or (self.video_decoder is None and bool(self._held))

    def _begin(self) -> None:
        pictures = [f for kind, f, _ in self._held if kind == "video"]
        if pictures:
            times = sorted(f.pts for f in pictures)
            self._t0 = times[0]
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            rate = snap_rate(statistics.median(gaps) / 1000) if gaps else Fraction(30)
        else:
            self._t0, rate = self._held[0][1].pts, Fraction(30)
        # A publisher that came back goes on at the stream's cadence, whatever its own rate.
        self.cadence = self.continuation.cadence if self.continuation else Cadence.of(rate, self.config)
        variants = self._start_lanes(pictures[0] if pictures else None)
        assert self._first_arrival is not None
        first_pts, first_wall = self._first_arrival
        origin = self.continuation.seconds if self.continuation else 0.0
        self.events.started(self.cadence, first_wall + (self._t0 - first_pts) / 1000 - origin,
                            variants)
        held, self._held = self._held, []
        for kind, frame, arrival in held:
            self._frame(kind, frame, arrival)

    def _start_lanes(self, picture: av.VideoFrame | None) -> list[Variant]:
        assert self.cadence is not None
        variants = []
        if picture is not None:
            for rendition in self._renditions(picture):
                variants.append(self._start_lane(rendition))
            if self.thumbs_output is not None and self.thumbs is None:
                # Tiles spaced as for a video as long as the DVR window: a storyboard of a
                # few hundred small pictures however long the stream, not one every 2 s.
                self.thumbs = Thumbnails(picture.width, picture.height, self.config.dvr_seconds,
                                         (variants[0].width, variants[0].height), self.thumbs_output)
        if self.audio_decoder is not None:
            frame_index, msn = self._origin
            self.audio = LiveAudioLane(self.cadence, self.config.audio_kbps,
                                       lambda part: self._part(AUDIO_NAME, part),
                                       self._whole(AUDIO_NAME),
                                       origin=(frame_index * self.cadence.frame_ticks, msn),
                                       resume_at=self.continuation.audio_end
                                       if self.continuation else None,
                                       on_fill=self.metrics.audio_filled.labels(self.stream_id).inc)
            self.events.init(AUDIO_NAME, cmaf.init_segment(self.audio.track))
            variants.append(Variant(AUDIO_NAME, self.audio.track.codecs,
                                    kbps=self.config.audio_kbps, peak_kbps=self.config.audio_kbps))
        return variants

    def _renditions(self, picture: av.VideoFrame) -> list[Rendition]:
        if self.continuation is not None:  # the same rungs, whatever the new source's size
            return list(self.continuation.renditions)
        chosen = choose(picture.width, picture.height, self.config.ladder)
        if self.config.rung_names:
            chosen = [r for r in chosen if r.name in self.config.rung_names] or chosen[-1:]
        return chosen[:self.config.max_rungs]

    def _start_lane(self, rendition: Rendition) -> Variant:
        assert self.cadence is not None
        name = rendition.name
        presets = (self.config.preset, *self.config.faster_presets)
        lane = LiveVideoLane(rendition, self.cadence, presets,
                             lambda part: self._part(name, part), self._reporter(name),
                             self._whole(name), partial(self.events.chunk, name))
        self.events.init(name, cmaf.init_segment(lane.track))
        thread = LaneThread(lane, depth=LANE_DEPTH)  # type: ignore[arg-type]
        thread.start()
        self.lanes.append(thread)
        return Variant(name, lane.track.codecs, rendition.width, rendition.height,
                       rendition.rung.kbps, rendition.rung.maxrate_kbps,
                       float(self.cadence.frame_rate))

    def _reporter(self, name: str) -> Callable[[float, float], None]:
        delay = self.metrics.delay.labels(self.stream_id, name)
        speed = self.metrics.speed.labels(self.stream_id, name)

        def report(seconds: float, times_real_time: float) -> None:
            self.governor.delays[name] = seconds
            delay.set(seconds)
            speed.set(times_real_time)

        return report

    def _whole(self, name: str) -> SegmentDone:
        return lambda _msn, fragment, duration: self.events.segment(name, fragment, duration)

    def _part(self, name: str, part: Part) -> None:
        self.metrics.parts.labels(self.stream_id, name).inc()
        self.events.part(name, part)

    def _video(self, frame: av.VideoFrame, arrival: float) -> None:
        assert self.cadence is not None and self._t0 is not None
        cadence = self.cadence
        # Cut by media time: a picture goes to the grid slot its timestamp rounds to (the
        # publisher's millisecond times jitter, a grid does not), and parts and segments are
        # fixed spans of that grid, whatever pictures the publisher dropped or however it
        # varies its rate. A publisher that came back starts at its origin: the next slot and
        # segment after the last ones of the one before.
        index = self._origin[0] - self._skew + round(
            (frame.pts - self._t0) * VIDEO_TIMESCALE / 1000 / cadence.frame_ticks)
        if not self.lanes:
            return
        if index - self._last_index - 1 > MAX_GAP * cadence.frame_rate \
                and self._last_frame is not None:
            # The publisher's clock jumped ahead: not a gap to fill, the next picture goes on
            # the next slot, as its sound goes on from its last sample. (Back by more than a
            # second, ingest cuts the publisher off.)
            self._skew += index - self._last_index - 1
            index = self._last_index + 1
        if index <= self._last_index:
            return  # a repeated or backwards timestamp cannot be presented
        self._fill(index, arrival)
        self._last_frame = frame
        self._place(frame, index, arrival)
        if self.thumbs is not None:
            self.thumbs.offer(frame, round(index * cadence.frame_ticks) / VIDEO_TIMESCALE)

    def _fill(self, index: int, arrival: float) -> None:
        """Pictures missing up to slot `index` (a starved camera, a busy publisher): every part
        that would start without one starts with the last picture again, so no part is empty and
        every part spans its whole grid interval, exactly. The alternatives are worse: a part
        running on to the next picture outlasts PART-TARGET (the bug this replaces); a part
        starting late leaves a hole in the media timeline, which hls.js must jump (a stall and
        a seek) and which shifts pictures against their sound; EXT-X-PART GAP=YES needs every
        rendition to agree and is not honoured by every player. A held picture is what the
        publisher's own preview showed, costs an encoder next to nothing (a P-frame of skips,
        or the segment's IDR where a segment starts), and keeps a frozen picture on its sound."""
        if self._last_frame is None:
            return
        assert self.cadence is not None
        frames, origin = self.cadence.part_frames, self._origin[0]
        start = origin - (origin - self._last_index - 1) // frames * frames  # next part start
        for slot in range(start, index, frames):
            self.metrics.held.labels(self.stream_id).inc()
            self._place(self._last_frame, slot, arrival)

    def _place(self, frame: av.VideoFrame, index: int, arrival: float, wait: bool = False) -> None:
        """Hand picture `index` of the grid to every lane (`wait`: never dropped)."""
        assert self.cadence is not None
        cadence = self.cadence
        origin, msn = self._origin
        self._last_index = index
        ticks = round(index * cadence.frame_ticks)
        part = (index - origin) // cadence.part_frames
        closes = (index - origin + 1) % cadence.part_frames == 0
        tick = Tick((msn + part // cadence.segment_parts, msn * cadence.segment_parts + part),
                    arrival, round((index + 1) * cadence.frame_ticks) if closes else None,
                    closes and (part + 1) % cadence.segment_parts == 0)
        key = tick.grid[0] != self._segment
        if key:
            self._segment = tick.grid[0]
            self.governor.review(self.lanes)
        # A part's first picture is never dropped for a lane either: it starts the part on the
        # grid (a part starting late would make the one before it run long), and every rung
        # then has every part, numbered alike.
        keep = key or wait or (index - origin) % cadence.part_frames == 0
        for lane in self.lanes:
            self._offer(lane, frame, ticks, tick, keep)

    def _offer(self, lane: LaneThread, frame: av.VideoFrame, ticks: int, tick: Tick,
               keep: bool) -> None:
        if not lane.is_alive() or lane.offer(frame, ticks, tick):
            return
        if keep:
            lane.submit(frame, ticks, tick)  # never dropped: wait for room
            return
        self.governor.dropped(lane.lane.rendition.name)

    def _audio(self, frame: av.AudioFrame) -> None:
        if self.audio is None or frame.pts is None or self._t0 is None:
            return
        origin = self.continuation.seconds if self.continuation else 0.0
        self.audio.encode(frame, (frame.pts - self._t0) / 1000 + origin)

    def _fill_segment(self) -> None:
        """The publisher went mid-segment and another may continue: the last picture is held to
        the segment's end, so every segment (live, and the VOD's) is whole and the next
        publisher starts on a segment boundary (a still of under a second, where players would
        stall anyway)."""
        if self.cadence is None or self._last_frame is None:
            return
        origin = self._origin[0]
        frames = self.cadence.part_frames * self.cadence.segment_parts
        missing = -(self._last_index - origin + 1) % frames
        for index in range(self._last_index + 1, self._last_index + 1 + missing):
            self._place(self._last_frame, index, time.monotonic(), wait=True)

    def _flush(self) -> None:
        """The publisher is gone: drain the decoders, then every encoder."""
        for decoder, kind in ((self.video_decoder, "video"), (self.audio_decoder, "audio")):
            if decoder is not None:
                for frame in decoder.decode(None):
                    self._frame(kind, frame, time.monotonic())
        if self.cadence is None and self._held:
            self._begin()
        if not self._final:
            self._fill_segment()
        for lane in self.lanes:
            if lane.is_alive():
                lane.stop()
        for lane in self.lanes:
            lane.join()
        end = (self._last_index + 1) * self.cadence.frame_ticks / VIDEO_TIMESCALE \
            if self.cadence and self._last_index >= 0 else None
        if self.audio is not None:
            self.audio.finish(end, pad=not self._final)
        if self.thumbs is not None and end is not None and self._final:
            self.thumbs.finish(end)


def _decoder(codec: str, extradata: bytes) -> av.CodecContext:
    decoder = av.CodecContext.create(codec, "r")
    decoder.extradata = extradata
    return decoder

