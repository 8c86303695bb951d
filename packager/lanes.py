"""Encoding lanes: one per rendition, each an encoder feeding a CMAF track writer.

The timeline every lane writes on: video decode times are each segment's presentation times in
sorted order, and every picture is presented `lead` after that (room for B-frame reordering), so no
composition offset is ever negative and fragment N of every rendition starts at the same time
whatever each encoder's B-frame choices were. The init segment's edit list takes `lead` away again:
the first picture is presented at zero, as the first audio sample is. (Negative offsets instead
would let each reader pick its own shift: FFmpeg shifts a track by its most negative offset, so
renditions and fragments read alone would each start somewhere else.)
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

import av
from av.codec.context import Flags
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from packager import cmaf, hls
from packager.ladder import AUDIO_KBPS, AUDIO_NAME, REORDER_FRAMES, Rendition
from packager.output import Output

VIDEO_TIMESCALE = 90000
AUDIO_RATE = 48000
AAC_FRAME = 1024
MIN_TAIL = 0.5  # seconds: a last segment shorter than this joins the one before it


def lead_seconds(frame_rate: Fraction) -> float:
    """How long after its decode each picture is presented: room for B-frame reordering."""
    return float(REORDER_FRAMES / frame_rate)


@dataclass(frozen=True)
class Cuts:
    """Segment starts: every `segment_seconds`, except a boundary so close to the declared `end`
    that it would leave a tail shorter than MIN_TAIL (or no tail at all, for a clip whose length is
    an exact multiple of the segment length)."""

    segment_seconds: float
    end: float | None = None

    def keeps(self, boundary: float) -> bool:
        return boundary <= 0 or self.end is None or self.end - boundary >= MIN_TAIL


@dataclass
class _Pending:
    data: bytes
    pts: int
    sync: bool


@dataclass
class TrackWriter:
    """Gathers one track's encoded samples and writes a CMAF segment at every cut.

    `lead`: ticks from a video sample's decode to its presentation (see the module's docstring)."""

    name: str
    track: cmaf.Track
    output: Output
    progressive: bool = True
    first_index: int = 1  # a chunk of a parallel job starts further on
    lead: int = 0
    segments: list[hls.SegmentInfo] = field(default_factory=list)
    on_playable: Callable[[str], None] | None = None  # called once, with the playlist's name
    _pending: list[_Pending] = field(default_factory=list)

    def start(self) -> None:
        self.output.write(f"{self.name}/init.mp4", cmaf.init_segment(self.track))

    def add(self, data: bytes, pts: int, sync: bool, cut: bool) -> None:
        if cut and self._pending:
            self._flush(next_pts=pts)
        self._pending.append(_Pending(data, pts, sync))

    def close(self, last_duration: int, media_end: int | None = None,
              next_start: int | None = None) -> None:
        """Write the last segment. Samples starting at or past `media_end` (an encoder's padding
        beyond the media) are dropped; the segment holds whole samples, so it lasts to the end of
        its last one. `next_start`: where the next chunk of a parallel job starts, so the
        timelines join with no gap."""
        if media_end is not None:
            self._pending = [p for p in self._pending if p.pts < media_end]
        if self._pending:
            end = max(p.pts for p in self._pending) + last_duration
            self._flush(next_pts=end if next_start is None else next_start)

    def _flush(self, next_pts: int) -> None:
        pending, self._pending = self._pending, []
        order = sorted(p.pts for p in pending)
        decode = self._decode_times(order, [p.pts + self.lead for p in pending])
        decode.append(next_pts)
        samples = [cmaf.Sample(p.data, decode[i + 1] - decode[i], p.pts + self.lead - decode[i], p.sync)
                   for i, p in enumerate(pending)]
        index = self.first_index + len(self.segments)
        uri = f"seg_{index:05d}.m4s"
        fragment = cmaf.media_segment(self.track, index, decode[0], samples)
        self.output.write(f"{self.name}/{uri}", fragment.data)
        duration = (next_pts - order[0]) / self.track.timescale
        self.segments.append(hls.SegmentInfo(uri, duration, len(fragment.data),
                                             fragment.key_offset, fragment.key_length))
        if self.progressive:
            self.output.write(f"{self.name}/index.m3u8",
                              hls.media_playlist(self.segments, playlist_type="EVENT",
                                                 ended=False).encode())
            if self.on_playable is not None and len(self.segments) == 1:
                self.on_playable(f"{self.name}/index.m3u8")

    def _decode_times(self, order: list[int], presented: list[int]) -> list[int]:
        """Decode times in decode order: the sorted presentation times, but never after
        a sample's own presentation or a later sample's decode, so no composition offset is
        negative even where a variable frame rate reorders further than `lead`. The first (the
        segment's IDR) stays at the segment's start, so fragments start alike in every rendition."""
        decode = [0] * len(order)
        bound = presented[-1] + 1
        for i in range(len(order) - 1, -1, -1):
            bound = decode[i] = min(order[i], presented[i], bound - 1)
        return decode

    def finish(self, iframes: bool) -> None:
        """The final VOD playlists."""
        self.output.write(f"{self.name}/index.m3u8", hls.media_playlist(self.segments).encode())
        if iframes:
            self.output.write(f"{self.name}/iframes.m3u8",
                              hls.iframe_playlist(self.segments).encode())


class VideoLane:
    """One video rendition: scaler, x264 encoder (set up by its rung) and its track writer."""

    def __init__(self, rendition: Rendition, frame_rate: Fraction, preset: str, output: Output,
                 progressive: bool, first_index: int = 1) -> None:
        self.rendition = rendition
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = rendition.width, rendition.height, "yuv420p"
        enc.time_base = Fraction(1, VIDEO_TIMESCALE)
        enc.framerate = frame_rate
        enc.bit_rate = rendition.rung.kbps * 1000
        enc.flags |= Flags.global_header  # SPS/PPS in extradata, for the avcC box
        enc.options = rendition.rung.x264_options(preset)
        enc.open()
        self.encoder = enc
        lead = round(lead_seconds(frame_rate) * VIDEO_TIMESCALE)
        track = cmaf.VideoTrack(cmaf.AvcConfig.from_extradata(enc.extradata),
                                rendition.width, rendition.height, VIDEO_TIMESCALE, delay=lead)
        self.writer = TrackWriter(rendition.name, track, output, progressive, first_index, lead)
        if first_index == 1:
            self.writer.start()
        self.frame_duration = round(VIDEO_TIMESCALE / frame_rate)
        self.scaler = VideoReformatter()

    def encode(self, frame: av.VideoFrame | None, pts: int = 0, keyframe: bool = False) -> None:
        if frame is not None:
            # A scaler of the lane's own: lanes run on threads, and a frame's cached one is shared.
            frame = self.scaler.reformat(frame, width=self.rendition.width,
                                         height=self.rendition.height, format="yuv420p")
            frame.pts = pts
            frame.time_base = self.encoder.time_base
            frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        for packet in self.encoder.encode(frame):
            self.writer.add(cmaf.annexb_to_avcc(bytes(packet)), packet.pts, packet.is_keyframe,
                            cut=packet.is_keyframe)

    def finish(self, next_start: int | None = None, final: bool = True) -> None:
        self.encode(None)
        self.writer.close(self.frame_duration, next_start=next_start)
        if final:
            self.writer.finish(iframes=True)


class LaneThread(threading.Thread):
    """Runs one video lane on a thread of its own, fed through a short queue.

    Scaling and x264 release the GIL, so the lanes encode in parallel with each other and with
    decoding; the queue is short so memory stays a few pictures per lane.
    """

    def __init__(self, lane: VideoLane, depth: int = 4) -> None:
        super().__init__(name=f"lane-{lane.rendition.name}", daemon=True)
        self.lane = lane
        self.error: BaseException | None = None
        self.finish_args: dict = {}
        self._queue: queue.Queue[tuple[av.VideoFrame, int, bool] | None] = queue.Queue(depth)

    def run(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is None:
                try:
                    self.lane.encode(*item)
                except BaseException as exc:  # reported to the job by submit() and wait()
                    self.error = exc
        if self.error is None:
            try:
                self.lane.finish(**self.finish_args)
            except BaseException as exc:
                self.error = exc

    def submit(self, frame: av.VideoFrame, pts: int, keyframe: bool) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((frame, pts, keyframe))

    def offer(self, *item: object) -> bool:
        """`submit` without waiting: False, and nothing queued, when the lane is that far behind
        (a live stream drops the picture rather than fall further behind real time)."""
        if self.error is not None:
            raise self.error
        try:
            self._queue.put_nowait(item)  # type: ignore[arg-type]
        except queue.Full:
            return False
        return True

    def close_quietly(self) -> None:
        self.error = self.error or RuntimeError("job abandoned")
        self._queue.put(None)
        self.join()

    def stop(self, **finish_args: object) -> None:
        """No more pictures: the lane flushes its encoder and writes its last segment."""
        self.finish_args = finish_args
        self._queue.put(None)

    def wait(self) -> None:
        """Until the lane is done; raises what it raised."""
        self.join()
        if self.error is not None:
            raise self.error


def close_all(threads: list[LaneThread], **finish_args: object) -> None:
    """Stop every lane first, then wait: the encoders drain their lookahead in parallel."""
    for thread in threads:
        thread.stop(**finish_args)
    for thread in threads:
        thread.wait()


def aac_encoder(kbps: int = AUDIO_KBPS) -> tuple[av.AudioResampler, av.CodecContext]:
    """An AAC encoder (stereo, 48 kHz, global header for the esds box) and the resampler that
    feeds it whole 1024-sample frames from any source layout and rate."""
    resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE,
                                  frame_size=AAC_FRAME)
    enc = av.CodecContext.create("aac", "w")
    enc.sample_rate, enc.layout, enc.format = AUDIO_RATE, "stereo", "fltp"
    enc.bit_rate = kbps * 1000
    enc.time_base = Fraction(1, AUDIO_RATE)
    enc.flags |= Flags.global_header
    enc.open()
    return resampler, enc


class AudioLane:
    """Stereo AAC at 48 kHz whatever the source layout, cut at the first frame at or after each
    segment boundary the video cuts at."""

    def __init__(self, output: Output, cuts: Cuts, progressive: bool) -> None:
        self.resampler, self.encoder = aac_encoder()
        track = cmaf.AudioTrack(bytes(self.encoder.extradata), 2, AUDIO_RATE, AUDIO_KBPS * 1000)
        self.writer = TrackWriter(AUDIO_NAME, track, output, progressive)
        self.writer.start()
        self.cuts = cuts
        self.segment_ticks = round(cuts.segment_seconds * AUDIO_RATE)
        self._samples = 0  # samples given to the encoder
        self._next_cut = self.segment_ticks
        self._first_pts: int | None = None
        self._started = False

    def encode(self, frame: av.AudioFrame | None, seconds: float = 0.0) -> None:
        """`seconds`: where this frame falls on the output timeline (0 = the video's start)."""
        if frame is not None and not self._started:
            self._started = True
            if seconds > 0.001:  # audio starts after the picture: lead in with silence
                for _ in range(round(seconds * AUDIO_RATE) // AAC_FRAME):
                    self._encode(self._silence())
        if frame is not None and seconds + frame.samples / frame.sample_rate <= 0:
            return  # wholly before the picture starts
        frames = self.resampler.resample(frame)
        for resampled in [*frames, None] if frame is None else frames:
            self._encode(resampled)

    @staticmethod
    def _silence() -> av.AudioFrame:
        silence = av.AudioFrame(format="fltp", layout="stereo", samples=AAC_FRAME)
        silence.sample_rate = AUDIO_RATE
        for plane in silence.planes:
            plane.update(bytes(plane.buffer_size))
        return silence

    def _encode(self, frame: av.AudioFrame | None) -> None:
        if frame is not None:
            frame.pts = self._samples
            frame.time_base = self.encoder.time_base
            self._samples += frame.samples
        for packet in self.encoder.encode(frame):
            self._write(packet)

    def _write(self, packet: av.Packet) -> None:
        if self._first_pts is None:
            self._first_pts = packet.pts  # the encoder's priming delay, removed
        pts = packet.pts - self._first_pts
        cut = False
        while self._next_cut <= pts:
            cut = cut or self.cuts.keeps(self._next_cut / AUDIO_RATE)
            self._next_cut += self.segment_ticks
        self.writer.add(bytes(packet), pts, True, cut=cut)

    def finish(self, video_end: float | None = None) -> None:
        """`video_end`: the picture's end; audio running past it (codec padding) is not kept."""
        self.encode(None)
        end = self._samples if video_end is None else min(self._samples, round(video_end * AUDIO_RATE))
        self.writer.close(AAC_FRAME, media_end=end)
        self.writer.finish(iframes=False)
