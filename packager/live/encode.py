"""Real-time encoders: one x264 lane per rung (on a thread, packager.lanes.LaneThread), one AAC
encoder, and the metrics that say whether they keep up.

x264 runs with `tune=zerolatency`: no B-frames, no lookahead, sliced threads, so a picture leaves
its encoder as soon as it went in. The bitstream-level options (CABAC, 8x8 transform, one
reference, no weighted prediction, deblocking) are pinned, so every preset from `veryfast` down to
`ultrafast` writes the same SPS/PPS: a lane that degrades to a faster preset keeps its init
segment, and players never see a new one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter
from prometheus_client import CollectorRegistry, Counter, Gauge

from packager import cmaf
from packager.ladder import Rendition
from packager.lanes import aac_encoder
from packager.live.config import AAC_FRAME, AUDIO_RATE, MAX_GAP, VIDEO_TIMESCALE, Cadence
from packager.live.playlist import Part
from packager.live.track import ChunkDone, PartWriter, SegmentDone

LIVE_X264 = ("keyint=infinite:scenecut=0:open-gop=0:bframes=0:ref=1:weightp=0:cabac=1:"
             "8x8dct=1:deblock=1:rc-lookahead=0")


class LiveMetrics:
    """Per stream and rendition; a stream's series are removed when it ends."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["stream", "rendition"]
        self.speed = Gauge("reel_live_encode_speed", "Media seconds encoded per second of "
                           "encoding time (above 1: faster than real time)", labels, registry=registry)
        self.delay = Gauge("reel_live_rung_delay_seconds", "From a picture's arrival at ingest to "
                           "its encoded sample, newest picture", labels, registry=registry)
        self.dropped = Counter("reel_live_dropped_frames_total", "Pictures not encoded because "
                               "the rung (rendition=\"source\": the decoder) was behind real time",
                               labels, registry=registry)
        self.degraded = Counter("reel_live_degrades_total", "Steps taken to catch up: a faster "
                                "preset, or a rung dropped", ["stream", "action"], registry=registry)
        self.parts = Counter("reel_live_parts_total", "LL-HLS parts written", labels,
                             registry=registry)
        self.held = Counter("reel_live_held_pictures_total", "Parts the publisher left without "
                            "a picture (a starved camera), started with its last one held",
                            ["stream"], registry=registry)
        self.audio_filled = Counter("reel_live_audio_filled_seconds_total", "Sound the "
                                    "publisher left out (a hole in its audio timestamps), "
                                    "filled with silence", ["stream"], registry=registry)

    def forget(self, stream: str, renditions: list[str]) -> None:
        for name in [*renditions, "source"]:
            for metric in (self.speed, self.delay, self.dropped, self.parts):
                try:
                    metric.remove(stream, name)
                except KeyError:
                    pass
        for per_stream in (self.held, self.audio_filled):
            try:
                per_stream.remove(stream)
            except KeyError:
                pass
        for action in ("preset", "drop_rung"):
            try:
                self.degraded.remove(stream, action)
            except KeyError:
                pass


@dataclass(frozen=True)
class Tick:
    """What travels with a picture to every lane: its place on the grid and its arrival."""

    grid: tuple[int, int]  # (segment, part)
    arrival: float  # time.monotonic() when ingest received it
    end: int | None = None  # the picture is its part's last: where the part ends (ticks)
    last: bool = False  # ... and that part is its segment's last


class LiveVideoLane:
    """Scaler, x264 and part writer for one rung. `faster()` asks for the next preset, taken at
    the next segment start (an IDR), where a new encoder changes nothing a decoder sees."""

    def __init__(self, rendition: Rendition, cadence: Cadence, presets: tuple[str, ...],
                 emit: Callable[[Part], None], report: Callable[[float, float], None],
                 on_segment: SegmentDone | None = None, on_chunk: ChunkDone | None = None,
                 ) -> None:
        self.rendition, self.cadence, self.presets = rendition, cadence, presets
        self.level = 0
        self.wanted = 0
        self.encoder = self._open(presets[0])
        self.track = cmaf.VideoTrack(cmaf.AvcConfig.from_extradata(self.encoder.extradata),
                                     rendition.width, rendition.height, VIDEO_TIMESCALE)
        # Pictures go out a frame at a time (LL-CMAF chunks), so a part can be streamed while
        # it grows; sound does not (a chunk per 21 ms AAC frame would cost a third of its rate).
        self.writer = PartWriter(self.track, emit, round(cadence.frame_ticks), on_segment,
                                 on_chunk)
        self.scaler = VideoReformatter()
        self.report = report  # (delay, speed) after each picture
        self._grids: dict[int, Tick] = {}
        self._segment = -1
        self._busy = 0.0

    @property
    def can_go_faster(self) -> bool:
        return self.wanted + 1 < len(self.presets)

    def faster(self) -> None:
        self.wanted = min(self.wanted + 1, len(self.presets) - 1)

    def _open(self, preset: str) -> av.CodecContext:
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = self.rendition.width, self.rendition.height, "yuv420p"
        enc.time_base = Fraction(1, VIDEO_TIMESCALE)
        enc.framerate = self.cadence.frame_rate
        enc.bit_rate = self.rendition.rung.kbps * 1000
        enc.flags |= Flags.global_header
        enc.options = {**self.rendition.rung.x264_options(preset), "tune": "zerolatency",
                       "x264-params": LIVE_X264}
        enc.open()
        return enc

    def encode(self, frame: av.VideoFrame, pts: int, tick: Tick) -> None:
        started = time.perf_counter()
        key = tick.grid[0] != self._segment
        self._segment = tick.grid[0]
        if key and self.wanted != self.level:
            self._switch()
        frame = self.scaler.reformat(frame, width=self.rendition.width,
                                     height=self.rendition.height, format="yuv420p")
        frame.pts, frame.time_base = pts, self.encoder.time_base
        frame.pict_type = PictureType.I if key else PictureType.NONE
        self._grids[pts] = tick
        self._write(self.encoder.encode(frame))
        self._busy += time.perf_counter() - started
        media = (pts + self.cadence.frame_ticks) / VIDEO_TIMESCALE
        self.report(time.monotonic() - tick.arrival, media / self._busy if self._busy else 0.0)

    def _write(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            tick = self._grids.pop(packet.pts)
            self.writer.add(cmaf.annexb_to_avcc(bytes(packet)), packet.pts, packet.is_keyframe,
                            tick.grid, tick.end, tick.last)

    def _switch(self) -> None:
        """A new encoder at the wanted preset, if it writes the same parameter sets."""
        encoder = self._open(self.presets[self.wanted])
        if bytes(encoder.extradata) != bytes(self.encoder.extradata):
            self.wanted = self.level  # would need a new init segment: stay as we are
            return
        self._write(self.encoder.encode(None))
        self.encoder, self.level = encoder, self.wanted

    def finish(self) -> None:
        self._write(self.encoder.encode(None))
        self.writer.close()


class LiveAudioLane:
    """Stereo AAC at 48 kHz, cut on the same grid of parts and segments as the pictures.

    The sound follows the publisher's audio clock, as pictures follow theirs: a frame that
    starts later than the sound so far ends (audio dropped by OBS under load, a mic that stops,
    lost packets) has the hole before it filled with silence, and one that starts earlier (sent
    twice, a clock stepping back) loses what overlaps. Written end to end regardless, everything
    after a hole would play early by its length for the rest of the stream (lip-sync lost) and
    the sound would end short of the pictures. Within JITTER of the clock, frames are written end
    to end: millisecond timestamps never place a frame exactly. A hole longer than MAX_GAP is a
    jump of the publisher's clock and is taken out, as the pictures' is (the transcoder's
    `_video`): the sound goes on from its last sample."""

    JITTER = AAC_FRAME // 2  # samples (10.7 ms): far above a timestamp's rounding to the ms

    def __init__(self, cadence: Cadence, kbps: int, emit: Callable[[Part], None],
                 on_segment: SegmentDone | None = None,
                 origin: tuple[float, int] = (0.0, 0), resume_at: int | None = None,
                 on_fill: Callable[[float], None] | None = None) -> None:
        """`origin`: (video ticks, segment number) where this publisher's grid starts;
        `resume_at`: where the sound of the publisher before ended (samples), for this one's
        to go on from without a hole; `on_fill`: told the seconds of each hole filled."""
        self.resampler, self.encoder = aac_encoder(kbps)
        self.track = cmaf.AudioTrack(bytes(self.encoder.extradata), 2, AUDIO_RATE, kbps * 1000)
        self.writer = PartWriter(self.track, emit, AAC_FRAME, on_segment)
        self.part_ticks = Fraction(cadence.part_frames * AUDIO_RATE) / cadence.frame_rate
        self.segment_parts = cadence.segment_parts
        self.origin = origin[0] * AUDIO_RATE / VIDEO_TIMESCALE  # in samples
        self.origin_msn = origin[1]
        self.resume_at = resume_at
        self.on_fill = on_fill
        self.written = 0  # where the sound written so far ends (samples)
        self.start: int | None = None  # where the first sample falls on the timeline
        self.end: int | None = None  # no sample from here on (the pictures' end)
        self._samples = 0
        self._fed = 0.0  # samples (at AUDIO_RATE) given to the resampler: it holds some back
        self._shift = 0  # samples from the publisher's clock to the timeline (resume, jumps)
        self._first_pts: int | None = None
        self._source: tuple[str, str, int] | None = None  # the decoded sound's format

    def encode(self, frame: av.AudioFrame, seconds: float = 0.0) -> None:
        """`seconds`: where `frame` starts on the stream's timeline."""
        clock = round(seconds * AUDIO_RATE)
        if self.start is None:
            if seconds * AUDIO_RATE < self.origin:
                return  # sound from before the first picture
            self.start = self.resume_at if self.resume_at is not None else clock
            self._shift = self.start - clock
        self._source = (frame.format.name, frame.layout.name, frame.sample_rate)
        late = clock + self._shift - (self.start + self._fed)
        if late > MAX_GAP * AUDIO_RATE:
            self._shift -= round(late)  # the clock jumped: go on from the last sample
        elif late > self.JITTER:
            silence = self._silence(round(late))
            self._feed(silence)
            if self.on_fill is not None:
                self.on_fill(silence.samples / silence.sample_rate)
        elif late < -self.JITTER:
            trimmed = _trim(frame, round(-late * frame.sample_rate / AUDIO_RATE))
            if trimmed is None:
                return  # all of it already heard
            frame = trimmed
        self._feed(frame)

    def _feed(self, frame: av.AudioFrame) -> None:
        self._fed += frame.samples * AUDIO_RATE / frame.sample_rate
        self._encode(self.resampler.resample(frame))

    def _silence(self, samples: int) -> av.AudioFrame:
        assert self._source is not None
        fmt, layout, rate = self._source
        frame = av.AudioFrame(format=fmt, layout=layout, samples=round(samples * rate / AUDIO_RATE))
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = rate
        return frame

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for resampled in frames:
            resampled.pts, resampled.time_base = self._samples, self.encoder.time_base
            self._samples += resampled.samples
            self._write(self.encoder.encode(resampled))

    def _write(self, packets: list[av.Packet]) -> None:
        for packet in packets:
            if self._first_pts is None:
                self._first_pts = packet.pts  # the encoder's priming delay, removed
            pts = packet.pts - self._first_pts + (self.start or 0)
            if self.end is not None and pts + AAC_FRAME // 2 > self.end:
                continue  # mostly past the last picture: codec padding, or a tail to nowhere
            part = max(0, int((pts - self.origin) // self.part_ticks))
            self.written = pts + AAC_FRAME
            msn = self.origin_msn
            self.writer.add(bytes(packet), pts, True, (msn + part // self.segment_parts,
                                                       msn * self.segment_parts + part))

    def finish(self, video_end: float | None, pad: bool = False) -> None:
        """Flush, keeping no sound past the pictures' end (or past the sound given, without
        pictures): the encoder's padding would be a sliver of a segment to nowhere. `pad`:
        silence up to the pictures' end, when the sound stopped short of it."""
        if pad and video_end is not None and self._source is not None and self.start is not None:
            missing = round(video_end * AUDIO_RATE) - (self.start + self._samples) + 2 * AAC_FRAME
            if missing > 0:
                self._encode(self.resampler.resample(self._silence(missing)))
        self._encode(self.resampler.resample(None))
        if self.start is not None:
            self.end = round(video_end * AUDIO_RATE) if video_end is not None \
                else self.start + self._samples
        self._write(self.encoder.encode(None))
        self.writer.close()


def _trim(frame: av.AudioFrame, samples: int) -> av.AudioFrame | None:
    """`frame` without its first `samples` (None: nothing left)."""
    if samples >= frame.samples:
        return None
    out = av.AudioFrame(format=frame.format.name, layout=frame.layout.name,
                        samples=frame.samples - samples)
    width = frame.format.bytes * (1 if frame.format.is_planar else len(frame.layout.channels))
    for plane, source in zip(out.planes, frame.planes, strict=True):
        plane.update(bytes(source)[samples * width : frame.samples * width])
    out.sample_rate = frame.sample_rate
    return out
