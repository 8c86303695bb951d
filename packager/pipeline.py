"""Decode once, encode many: one pass over the source feeds every rendition's encoder.

Segment boundaries are decided once, from the source's timestamps, and every video encoder is told
to put an IDR on exactly those pictures; so all renditions cut at identical times and a player can
switch between them at any segment. While the job runs, each rendition's playlist is published as
an EVENT playlist after every segment, so a player can start before the end; `master.m3u8` is
written last, when everything else is in place.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av

from packager import hls
from packager.errors import PackagingError
from packager.ladder import AUDIO_NAME, DEFAULT_LADDER, Rung, choose
from packager.lanes import (
    VIDEO_TIMESCALE,
    AudioLane,
    Cuts,
    LaneThread,
    VideoLane,
    close_all,
)
from packager.output import Output
from packager.progress import Progress, Tracker
from packager.source import Source, Upright
from packager.thumbs import Thumbnails

TRUNCATED_SHARE = 0.9  # decoding ending before this share of the declared duration: truncated


@dataclass
class PackageResult:
    master: Path | str
    duration: float
    renditions: list[str]
    segments: int


@dataclass
class _Clock:
    """Where each picture falls on the output timeline, and where segments are cut."""

    start: float
    cuts: Cuts
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
        cut = False
        while self.next_cut <= rel + 0.001:
            cut = cut or self.cuts.keeps(self.next_cut)
            self.next_cut += self.cuts.segment_seconds
        self.frames += 1
        return pts, rel, cut


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


def audio_lane(source: Source, output: Output, segment_seconds: float,
               progressive: bool) -> AudioLane:
    """The audio lane of a job over `source`, cut where its video is."""
    return AudioLane(output, Cuts(segment_seconds, source.duration), progressive)


def publish(output: Output, videos: list[hls.VideoVariant], audio: AudioLane | None) -> PackageResult:
    """Writes `master.m3u8`, last: its presence means the video is complete."""
    audio_variant = None
    if audio is not None and audio.writer.segments:
        audio_variant = hls.AudioVariant(f"{AUDIO_NAME}/index.m3u8", audio.writer.track.codecs, 2,
                                         audio.writer.segments)
    output.write("master.m3u8", hls.master_playlist(videos, audio_variant).encode())
    names = [v.uri.split("/")[0] for v in videos] + ([AUDIO_NAME] if audio_variant else [])
    segments = videos[0].segments if videos else audio_variant.segments  # type: ignore[union-attr]
    root = getattr(output, "root", None)
    return PackageResult(
        master=(root / "master.m3u8") if root is not None else "master.m3u8",
        duration=sum(s.duration for s in segments),
        renditions=names,
        segments=len(segments),
    )


class Job:
    """One pass over a source: decode, turn upright, feed every lane, then publish.

    With a Window, only that part of the video is encoded (no audio, no playlists): a chunk of
    a parallel job, whose segments are stitched by packager.parallel.
    """

    def __init__(self, source: Source, output: Output, *, ladder: tuple[Rung, ...] = DEFAULT_LADDER,
                 segment_seconds: float = 6.0, preset: str = "veryfast", progressive: bool = True,
                 progress: Progress | None = None, deadline: float | None = None,
                 window: Window | None = None,
                 on_playable: Callable[[str], None] | None = None) -> None:
        self.source, self.output, self.ladder = source, output, ladder
        self.segment_seconds, self.preset = segment_seconds, preset
        self.progressive = progressive and window is None
        self.deadline = deadline
        self.tracker = Tracker(progress, source.duration or 0.0)
        self.window = window or Window(0.0, None, 1)
        self.on_playable = on_playable
        self.next_start: int | None = None
        self.lanes: list[VideoLane] = []
        self.threads: list[LaneThread] = []
        self.audio = (audio_lane(source, output, segment_seconds, self.progressive)
                      if source.audio and window is None else None)
        cuts = Cuts(segment_seconds, source.duration)
        self.clock = _Clock(source.start, cuts, source.frame_rate, self.window.start)
        self.upright: Upright | None = None
        self.thumbs: Thumbnails | None = None
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
        for thread in self.threads:
            thread.submit(frame, pts, cut)
        self.thumbs.offer(frame, seconds)
        self.media_end = max(self.media_end, seconds + 1 / float(self.source.frame_rate))
        self.tracker.at(seconds)

    def _audio(self, frame: av.AudioFrame) -> None:
        if self.audio is None or frame.time is None:
            return
        seconds = frame.time - self.source.start
        self.audio.encode(frame, seconds)
        if not self.lanes:
            self.media_end = max(self.media_end, seconds + frame.samples / frame.sample_rate)
        if self.source.video is None:
            self.tracker.at(seconds)

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
            close_all(self.threads, next_start=self.next_start, final=False)
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
        self.tracker.enter("finishing")
        close_all(self.threads)
        if self.audio is not None:
            self.audio.finish(self.media_end if self.lanes else None)
            if not self.audio.writer.segments:
                self.audio = None  # an audio stream with no samples in it
        if not self.lanes and self.audio is None:
            raise PackagingError("no_frames", "nothing decodable in the file")
        if self.thumbs is not None:
            self.tracker.enter("thumbnails")
            self.thumbs.finish(self.media_end)
        result = publish(self.output, [hls.VideoVariant(
            f"{lane.rendition.name}/index.m3u8", f"{lane.rendition.name}/iframes.m3u8",
            lane.rendition.width, lane.rendition.height, float(self.source.frame_rate),
            lane.writer.track.codecs, lane.writer.segments) for lane in self.lanes], self.audio)
        self.tracker.enter("done")
        return result
