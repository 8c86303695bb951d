"""Decode once, encode many: one pass over the source feeds every rendition's encoder.

Segment boundaries are decided once, from the source's timestamps, and every video encoder is told
to put an IDR on exactly those pictures; so all renditions cut at identical times and a player can
switch between them at any segment. While the job runs, each rendition's playlist is published as
an EVENT playlist after every segment, so a player can start before the end; `master.m3u8` is
written last, when everything else is in place.
"""

from __future__ import annotations

import functools
import logging
import math
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from av.codec.context import Flags
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from packager import cmaf, hls
from packager.errors import PackagingError
from packager.ladder import AUDIO_KBPS, AUDIO_NAME, DEFAULT_LADDER, Rendition, Rung, choose
from packager.output import DirectoryOutput, Output
from packager.source import Limits, Source, Upright
from packager.thumbs import Thumbnails

log = logging.getLogger("packager")

VIDEO_TIMESCALE = 90000
AUDIO_RATE = 48000
AAC_FRAME = 1024
TRUNCATED_SHARE = 0.9  # decoding ending before this share of the declared duration: truncated

Progress = Callable[[int, int], None]

__all__ = ["PackageResult", "PackagingError", "Limits", "package"]


@dataclass
class PackageResult:
    master: Path | str
    duration: float
    renditions: list[str]
    segments: int


@dataclass
class _Pending:
    data: bytes
    pts: int
    dts: int
    sync: bool


@dataclass
class TrackWriter:
    """Gathers one track's encoded samples and writes a CMAF segment at every cut."""

    name: str
    track: cmaf.Track
    output: Output
    progressive: bool = True
    first_index: int = 1  # a chunk of a parallel job starts further on
    segments: list[hls.SegmentInfo] = field(default_factory=list)
    on_playable: Callable[[str], None] | None = None  # called once, with the playlist's name
    _pending: list[_Pending] = field(default_factory=list)
    _shift: int | None = None

    def start(self) -> None:
        self.output.write(f"{self.name}/init.mp4", cmaf.init_segment(self.track))

    def add(self, data: bytes, pts: int, dts: int, sync: bool, cut: bool) -> None:
        if self._shift is None:
            # Decode times start where presentation does (the first picture's pts), so the
            # delay B-frames add to dts never shows as a gap or an offset.
            self._shift = dts - pts
        if cut and self._pending:
            self._flush(next_dts=dts, next_pts=pts)
        self._pending.append(_Pending(data, pts, dts, sync))

    def close(self, last_duration: int, media_end: int | None = None,
              next_start: int | None = None) -> None:
        """Write the last segment. `media_end` caps its playlist duration where the encoder
        padded past the end of the media (AAC's last frame). `next_start`: where the next chunk
        of a parallel job starts, so the timelines join with no gap."""
        if self._pending:
            last = self._pending[-1]
            end_pts = max(p.pts for p in self._pending) + last_duration
            next_dts = last.dts + last_duration
            if media_end is not None:
                end_pts = min(end_pts, media_end)
            if next_start is not None and self._shift is not None:
                end_pts, next_dts = next_start, next_start + self._shift
            self._flush(next_dts=next_dts, next_pts=end_pts)

    def _flush(self, next_dts: int, next_pts: int) -> None:
        pending, self._pending = self._pending, []
        assert self._shift is not None
        shift = self._shift
        samples = []
        for i, p in enumerate(pending):
            following = pending[i + 1].dts if i + 1 < len(pending) else next_dts
            # Signed composition offsets (trun v1) keep presentation at the encoder's pts.
            samples.append(cmaf.Sample(p.data, max(1, following - p.dts), p.pts - (p.dts - shift),
                                       p.sync))
        index = self.first_index + len(self.segments)
        uri = f"seg_{index:05d}.m4s"
        fragment = cmaf.media_segment(self.track, index, pending[0].dts - shift, samples)
        self.output.write(f"{self.name}/{uri}", fragment.data)
        start_pts = min(p.pts for p in pending)
        duration = (next_pts - start_pts) / self.track.timescale
        self.segments.append(hls.SegmentInfo(uri, duration, len(fragment.data),
                                             fragment.key_offset, fragment.key_length))
        if self.progressive:
            self.output.write(f"{self.name}/index.m3u8",
                              hls.media_playlist(self.segments, playlist_type="EVENT",
                                                 ended=False).encode())
            if self.on_playable is not None and len(self.segments) == 1:
                self.on_playable(f"{self.name}/index.m3u8")

    def finish(self, iframes: bool) -> None:
        """The final VOD playlists."""
        self.output.write(f"{self.name}/index.m3u8", hls.media_playlist(self.segments).encode())
        if iframes:
            self.output.write(f"{self.name}/iframes.m3u8",
                              hls.iframe_playlist(self.segments).encode())


class VideoLane:
    """One video rendition: scaler, x264 encoder and its track writer."""

    def __init__(self, rendition: Rendition, frame_rate: Fraction, preset: str, output: Output,
                 progressive: bool, first_index: int = 1) -> None:
        self.rendition = rendition
        rung = rendition.rung
        enc = av.CodecContext.create("libx264", "w")
        enc.width, enc.height, enc.pix_fmt = rendition.width, rendition.height, "yuv420p"
        enc.time_base = Fraction(1, VIDEO_TIMESCALE)
        enc.framerate = frame_rate
        enc.bit_rate = rung.kbps * 1000
        enc.flags |= Flags.global_header  # SPS/PPS in extradata, for the avcC box
        enc.options = {
            "preset": preset,
            "profile": rung.profile,
            "maxrate": f"{rung.maxrate_kbps}k",
            "bufsize": f"{rung.maxrate_kbps * 2}k",
            "forced-idr": "1",
            # Keyframes only where we force them: segment starts, identical in every rendition.
            "x264-params": "keyint=infinite:scenecut=0:open-gop=0",
        }
        enc.open()
        self.encoder = enc
        track = cmaf.VideoTrack(cmaf.AvcConfig.from_extradata(enc.extradata),
                                rendition.width, rendition.height, VIDEO_TIMESCALE)
        self.writer = TrackWriter(rendition.name, track, output, progressive, first_index)
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
            self.writer.add(cmaf.annexb_to_avcc(bytes(packet)), packet.pts, packet.dts,
                            packet.is_keyframe, cut=packet.is_keyframe)

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


def _close_all(threads: list[LaneThread], **finish_args: object) -> None:
    """Stop every lane first, then wait: the encoders drain their lookahead in parallel."""
    for thread in threads:
        thread.stop(**finish_args)
    for thread in threads:
        thread.wait()


class AudioLane:
    """Stereo AAC at 48 kHz whatever the source layout, cut at the same boundaries as video."""

    def __init__(self, output: Output, segment_seconds: float, progressive: bool) -> None:
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE,
                                           frame_size=AAC_FRAME)
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate, enc.layout, enc.format = AUDIO_RATE, "stereo", "fltp"
        enc.bit_rate = AUDIO_KBPS * 1000
        enc.time_base = Fraction(1, AUDIO_RATE)
        enc.flags |= Flags.global_header
        enc.open()
        self.encoder = enc
        track = cmaf.AudioTrack(bytes(enc.extradata), 2, AUDIO_RATE, AUDIO_KBPS * 1000)
        self.writer = TrackWriter(AUDIO_NAME, track, output, progressive)
        self.writer.start()
        self.segment_ticks = round(segment_seconds * AUDIO_RATE)
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
        cut = pts >= self._next_cut
        if cut:
            while self._next_cut <= pts:
                self._next_cut += self.segment_ticks
        self.writer.add(bytes(packet), pts, pts, True, cut=cut)

    def finish(self, video_end: float | None = None) -> None:
        """`video_end`: the picture's end; audio running past it (codec padding) is not counted."""
        self.encode(None)
        end = self._samples if video_end is None else min(self._samples, round(video_end * AUDIO_RATE))
        self.writer.close(AAC_FRAME, media_end=end)
        self.writer.finish(iframes=False)


@dataclass
class _Clock:
    """Where each picture falls on the output timeline, and where segments are cut."""

    start: float
    segment_seconds: float
    frame_rate: Fraction
    window_start: float = 0.0
    last_pts: int = -1
    next_cut: float = 0.0
    frames: int = 0

    def __post_init__(self) -> None:
        self.next_cut = self.window_start

    def place(self, frame: av.VideoFrame) -> tuple[int, float, bool] | None:
        """(pts in the video timescale, seconds, starts a segment) or None to drop the frame."""
        seconds = (frame.time if frame.time is not None else self.frames / self.frame_rate)
        rel = seconds - self.start
        pts = round(rel * VIDEO_TIMESCALE)
        if pts <= self.last_pts:
            return None  # a repeated or backwards timestamp cannot be presented
        if self.last_pts < 0 and pts > 0 and self.window_start == 0:
            pts, rel = 0, 0.0  # the first picture opens the timeline
        self.last_pts = pts
        cut = rel >= self.next_cut - 0.001
        while self.next_cut <= rel + 0.001:
            self.next_cut += self.segment_seconds
        self.frames += 1
        return pts, rel, cut


def package(
    input_path: Path | str,
    outdir: Path | str | None = None,
    *,
    output: Output | None = None,
    ladder: tuple[Rung, ...] = DEFAULT_LADDER,
    segment_seconds: float = 6.0,
    preset: str = "veryfast",
    limits: Limits | None = None,
    progressive: bool = True,
    progress: Progress | None = None,
    on_playable: Callable[[str], None] | None = None,
    workers: int = 1,
    chunk_seconds: float = 60.0,
    output_factory: Callable[[], Output] | None = None,
) -> PackageResult:
    """Package `input_path` into HLS: renditions first, `master.m3u8` last.

    Give `outdir` (a directory), `output` (any Output) or `output_factory` (a picklable callable
    making one: needed for `workers` > 1, where inputs longer than two chunks are encoded in
    parallel processes, `chunk_seconds` each). `on_playable(name)` is called once the lowest
    rendition's EVENT playlist `name` ("v144/index.m3u8") can be played. Raises PackagingError.
    """
    if output_factory is None and outdir is not None:
        output_factory = functools.partial(DirectoryOutput, outdir)
    if output is None:
        if output_factory is None:
            raise ValueError("give outdir, output or output_factory")
        output = output_factory()
    limits = limits or Limits()
    deadline = (time.monotonic() + limits.max_processing_seconds
                if limits.max_processing_seconds else None)
    source = Source(Path(input_path), limits)
    try:
        long_video = source.video is not None and (source.duration or 0) > 2 * chunk_seconds
        if workers > 1 and output_factory is not None and long_video:
            from packager.parallel import package_parallel

            return package_parallel(source, output, output_factory, workers=workers,
                                    chunk_seconds=chunk_seconds, ladder=ladder,
                                    segment_seconds=segment_seconds, preset=preset, limits=limits,
                                    progress=progress, on_playable=on_playable)
        job = _Job(source, output, ladder, segment_seconds, preset, progressive, progress, deadline)
        job.on_playable = on_playable
        return job.run()
    finally:
        source.close()


@dataclass(frozen=True)
class Window:
    """The part of the timeline one chunk of a parallel job encodes: [start, end) seconds,
    both on segment boundaries, its first segment numbered `first_index`."""

    start: float
    end: float | None
    first_index: int


@dataclass
class ChunkResult:
    """What a chunk hands back to the job that stitches: picklable, no frames."""

    segments: dict[str, list[hls.SegmentInfo]]
    codecs: dict[str, str]
    sizes: dict[str, tuple[int, int]]
    avcc: dict[str, bytes]
    media_end: float
    poster: bytes | None
    tiles: list[tuple[float, int, int, list[bytes]]]


class _WindowDone(Exception):
    """The chunk reached the end of its window."""


class _Job:
    """One pass over a source: decode, turn upright, feed every lane, then publish.

    With a Window, only that part of the video is encoded (no audio, no playlists): a chunk of
    a parallel job, whose segments are stitched by packager.parallel.
    """

    def __init__(self, source: Source, output: Output, ladder: tuple[Rung, ...],
                 segment_seconds: float, preset: str, progressive: bool,
                 progress: Progress | None, deadline: float | None,
                 window: Window | None = None) -> None:
        self.source, self.output, self.ladder = source, output, ladder
        self.segment_seconds, self.preset = segment_seconds, preset
        self.progressive = progressive and window is None
        self.progress, self.deadline = progress, deadline
        self.window = window or Window(0.0, None, 1)
        self.next_start: int | None = None
        self.on_playable: Callable[[str], None] | None = None
        self.lanes: list[VideoLane] = []
        self.threads: list[LaneThread] = []
        self.audio = (AudioLane(output, segment_seconds, self.progressive)
                      if source.audio and window is None else None)
        self.clock = _Clock(source.start, segment_seconds, source.frame_rate, self.window.start)
        self.upright: Upright | None = None
        self.thumbs: Thumbnails | None = None
        self.total_parts = math.ceil(source.duration / segment_seconds) if source.duration else 0
        self.parts = 0
        self.media_end = 0.0

    def _start_video(self, frame: av.VideoFrame) -> None:
        self.upright = Upright(Upright.of(frame))
        width, height = frame.width, frame.height
        if self.upright.swaps_axes():
            width, height = height, width
        renditions = choose(width, height, self.ladder)
        self.lanes = [VideoLane(r, self.source.frame_rate, self.preset, self.output, self.progressive,
                                self.window.first_index) for r in renditions]
        self.lanes[-1].writer.on_playable = self.on_playable  # the lowest rung starts fastest
        self.threads = [LaneThread(lane) for lane in self.lanes]
        for thread in self.threads:
            thread.start()
        top = renditions[0]
        self.thumbs = Thumbnails(width, height, self.source.duration, (top.width, top.height),
                                 self.output)

    def _video(self, frame: av.VideoFrame) -> None:
        if self.upright is None:
            self._start_video(frame)
        placed = self.clock.place(frame)
        if placed is None:
            return
        pts, seconds, cut = placed
        if seconds < self.window.start - 0.001:
            return  # decoded from the keyframe before the window: not ours to encode
        if self.window.end is not None and seconds >= self.window.end - 0.001:
            self.next_start = pts
            raise _WindowDone
        assert self.upright is not None and self.thumbs is not None
        frame = self.upright(frame)
        if cut and self.clock.frames > 1:
            self.parts += 1
            if self.progress:
                self.progress(self.parts, max(self.total_parts, self.parts + 1))
        for thread in self.threads:
            thread.submit(frame, pts, cut)
        self.thumbs.offer(frame, seconds)
        self.media_end = max(self.media_end, seconds + 1 / float(self.source.frame_rate))

    def _audio(self, frame: av.AudioFrame) -> None:
        if self.audio is None or frame.time is None:
            return
        seconds = frame.time - self.source.start
        self.audio.encode(frame, seconds)
        if not self.lanes:
            self.media_end = max(self.media_end, seconds + frame.samples / frame.sample_rate)

    def run(self) -> PackageResult:
        if self.source.video is None and self.audio is not None:
            self.audio.writer.on_playable = self.on_playable
        try:
            self._decode()
            return self._finish()
        finally:
            self._abandon_threads()

    def run_chunk(self) -> ChunkResult:
        try:
            self._decode()
            _close_all(self.threads, next_start=self.next_start, final=False)
        finally:
            self._abandon_threads()
        assert self.thumbs is not None
        return ChunkResult(
            segments={lane.rendition.name: lane.writer.segments for lane in self.lanes},
            codecs={lane.rendition.name: lane.writer.track.codecs for lane in self.lanes},
            sizes={lane.rendition.name: (lane.rendition.width, lane.rendition.height)
                   for lane in self.lanes},
            avcc={lane.rendition.name: lane.writer.track.config.avcc_box()  # type: ignore[union-attr]
                  for lane in self.lanes},
            media_end=self.media_end, poster=self.thumbs.poster,
            tiles=[(t, f.width, f.height, [bytes(p) for p in f.planes]) for t, f in self.thumbs.tiles],
        )

    def _abandon_threads(self) -> None:
        """On failure too: no encoder thread outlives the job."""
        for thread in self.threads:
            if thread.is_alive():
                thread.close_quietly()

    def _decode(self) -> None:
        errors = packets = 0
        streams = self.source.streams if self.audio else [s for s in [self.source.video] if s]
        if self.window.start > 0 and self.source.video is not None:
            video = self.source.video
            target = (self.window.start + self.source.start) / video.time_base
            self.source.container.seek(int(target), stream=video, backward=True)
        try:
            for packet in self.source.container.demux(*streams):
                packets += 1
                if self.deadline and time.monotonic() > self.deadline:
                    raise PackagingError("timeout", "packaging took longer than allowed")
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    errors += 1  # a damaged packet: skip it, as players do
                    continue
                for frame in decoded:
                    if isinstance(frame, av.AudioFrame):
                        self._audio(frame)
                    else:
                        self._video(frame)
        except _WindowDone:
            pass
        except av.error.FFmpegError as exc:
            raise PackagingError("corrupt_input", f"decoding failed: {exc}") from exc
        if packets and errors > packets / 2:
            raise PackagingError("corrupt_input", f"{errors} of {packets} packets could not be decoded")

    def _finish(self) -> PackageResult:
        if self.source.video is not None and not self.clock.frames:
            raise PackagingError("no_frames", "the video stream holds no decodable picture")
        if self.source.video is not None and self.clock.frames == 1 and self.source.audio is None:
            raise PackagingError("still_image", "a single picture is not a video")
        declared = self.source.duration
        if declared and declared > 2 and self.media_end < TRUNCATED_SHARE * declared:
            raise PackagingError("truncated", f"the file declares {declared:.1f} s but holds only "
                                              f"{self.media_end:.1f} s: was the upload cut short?")
        _close_all(self.threads)
        if self.audio is not None:
            self.audio.finish(self.media_end if self.lanes else None)
            if not self.audio.writer.segments:
                self.audio = None  # an audio stream with no samples in it
        if not self.lanes and self.audio is None:
            raise PackagingError("no_frames", "nothing decodable in the file")
        if self.thumbs is not None:
            self.thumbs.finish(self.media_end)
        return self._publish()

    def _publish(self) -> PackageResult:
        videos = [hls.VideoVariant(
            f"{lane.rendition.name}/index.m3u8", f"{lane.rendition.name}/iframes.m3u8",
            lane.rendition.width, lane.rendition.height, float(self.source.frame_rate),
            lane.writer.track.codecs, lane.writer.segments) for lane in self.lanes]
        audio = None
        if self.audio is not None:
            audio = hls.AudioVariant(f"{AUDIO_NAME}/index.m3u8", self.audio.writer.track.codecs, 2,
                                     self.audio.writer.segments)
        # Written last: its presence means the video is complete.
        self.output.write("master.m3u8", hls.master_playlist(videos, audio).encode())
        first = self.lanes[0].writer if self.lanes else self.audio.writer  # type: ignore[union-attr]
        if self.progress:
            self.progress(self.parts + 1, self.parts + 1)
        root = getattr(self.output, "root", None)
        names = [lane.rendition.name for lane in self.lanes] + ([AUDIO_NAME] if self.audio else [])
        return PackageResult(
            master=(root / "master.m3u8") if root is not None else "master.m3u8",
            duration=sum(s.duration for s in first.segments),
            renditions=names,
            segments=len(first.segments),
        )
