"""Opening an upload: what it holds, whether we accept it, and its pictures the right way up."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.filter

from packager.errors import PackagingError

# Demuxers that hold pictures, not video: an upload of one is a still image.
_IMAGE_FORMATS = ("image2", "png_pipe", "jpeg_pipe", "bmp_pipe", "webp_pipe", "tiff_pipe", "gif")


@dataclass(frozen=True)
class Limits:
    """What a job accepts; beyond them it fails with a typed reason, publishing nothing."""

    max_seconds: float = 4 * 3600.0
    max_height: int = 2160  # of the short side: 2160 admits 4K in either orientation
    max_bytes: int = 64 * 1024**3
    max_processing_seconds: float | None = None


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 1 <= rate <= 240:
            return Fraction(rate).limit_denominator(1001)
    return Fraction(30)


class Upright:
    """Turns decoded pictures by their display matrix (phones record sideways and say so)."""

    _FILTERS = {90: [("transpose", "cclock")], 180: [("hflip", ""), ("vflip", "")],
                270: [("transpose", "clock")]}

    def __init__(self, rotation: int) -> None:
        self.rotation = rotation % 360
        self._graph: av.filter.Graph | None = None

    @staticmethod
    def of(frame: av.VideoFrame) -> int:
        """Counter-clockwise degrees, rounded to a right angle."""
        return int(round((frame.rotation or 0) / 90.0)) * 90 % 360

    def swaps_axes(self) -> bool:
        return self.rotation in (90, 270)

    def __call__(self, frame: av.VideoFrame) -> av.VideoFrame:
        if self.rotation not in self._FILTERS:
            return frame
        if self._graph is None:
            graph = av.filter.Graph()
            nodes = [graph.add_buffer(width=frame.width, height=frame.height, format=frame.format,
                                      time_base=frame.time_base or Fraction(1, 90000))]
            nodes += [graph.add(name, args) if args else graph.add(name)
                      for name, args in self._FILTERS[self.rotation]]
            nodes.append(graph.add("buffersink"))
            for a, b in zip(nodes, nodes[1:], strict=False):
                a.link_to(b)
            graph.configure()
            self._graph = graph
        self._graph.push(frame)
        turned = self._graph.pull()
        turned.pts, turned.time_base = frame.pts, frame.time_base
        return turned


class Source:
    """An opened upload: its video and audio streams, frame rate, duration and start."""

    def __init__(self, path: Path, limits: Limits) -> None:
        self.path = path
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise PackagingError("unreadable_input", f"cannot read the input: {exc.strerror}") from exc
        if size == 0:
            raise PackagingError("empty_input", "the upload is empty (0 bytes)")
        if size > limits.max_bytes:
            raise PackagingError("too_large", f"the upload is {size} bytes; the limit is "
                                              f"{limits.max_bytes}")
        try:
            self.container = av.open(str(path), options={"probesize": "20000000"})
        except (av.error.FFmpegError, UnicodeDecodeError) as exc:
            raise PackagingError("not_a_video", f"FFmpeg cannot read this file as media: {exc}") from exc
        try:
            self._inspect(limits)
        except BaseException:
            self.container.close()
            raise

    def _inspect(self, limits: Limits) -> None:
        c = self.container
        videos = [s for s in c.streams.video
                  if not s.disposition & av.stream.Disposition.attached_pic]  # cover art is not video
        self.video = videos[0] if videos else None
        self.audio = next(iter(c.streams.audio), None)
        if self.video is None and self.audio is None:
            raise PackagingError("no_media", "the file has neither a video nor an audio stream")
        if self.video is not None and any(f in c.format.name.split(",") for f in _IMAGE_FORMATS):
            raise PackagingError("still_image", "this is a still image, not a video")
        self.duration = c.duration / 1_000_000 if c.duration and c.duration > 0 else None
        if self.duration is not None and self.duration > limits.max_seconds:
            raise PackagingError("too_long", f"the video lasts {self.duration:.0f} s; "
                                             f"the limit is {limits.max_seconds:.0f} s")
        self.frame_rate = Fraction(30)
        if self.video is not None:
            cc = self.video.codec_context
            if not cc.width or not cc.height:
                raise PackagingError("not_a_video", "the video stream has no picture size")
            if min(cc.width, cc.height) > limits.max_height:
                raise PackagingError("resolution_too_high", f"the video is {cc.width}x{cc.height}; "
                                     f"the limit is {limits.max_height} lines")
            self.frame_rate = _frame_rate(self.video)
            self.video.thread_type = "AUTO"
        # Both tracks are timed from the start of the video (or of the audio, with no video), so
        # they start together in the output.
        lead = self.video or self.audio
        assert lead is not None
        self.start = float(lead.start_time * lead.time_base) if lead.start_time is not None else 0.0

    @property
    def streams(self) -> list[av.stream.Stream]:
        return [s for s in (self.video, self.audio) if s is not None]

    def close(self) -> None:
        self.container.close()
