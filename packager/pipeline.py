"""Decode once, encode many: one pass over the source feeds every rendition's encoder.

Segment boundaries are decided once, from the source's timestamps, and every video encoder is told
to put an IDR on exactly those pictures; so all renditions cut at identical times and a player can
switch between them at any segment.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
from av.codec.context import Flags
from av.video.frame import PictureType

from packager import cmaf, hls
from packager.ladder import AUDIO_KBPS, AUDIO_NAME, DEFAULT_LADDER, Rendition, Rung, choose
from packager.output import DirectoryOutput, Output

log = logging.getLogger("packager")

VIDEO_TIMESCALE = 90000
AUDIO_RATE = 48000
POSTER_AT = 2.0  # seconds into the video, or a third of it for short clips

Progress = Callable[[int, int], None]


class PackagingError(Exception):
    """Packaging failed for a reason the uploader should see. `reason` is a short typed code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    segments: list[hls.SegmentInfo] = field(default_factory=list)
    _pending: list[_Pending] = field(default_factory=list)
    _first_dts: int | None = None

    def start(self) -> None:
        self.output.write(f"{self.name}/init.mp4", cmaf.init_segment(self.track))

    def add(self, data: bytes, pts: int, dts: int, sync: bool, cut: bool) -> None:
        if self._first_dts is None:
            self._first_dts = dts
        if cut and self._pending:
            self._flush(next_dts=dts, next_pts=pts)
        self._pending.append(_Pending(data, pts, dts, sync))

    def close(self, last_duration: int, media_end: int | None = None) -> None:
        """Write the last segment. `media_end` caps its playlist duration where the encoder
        padded past the end of the media (AAC's last frame)."""
        if self._pending:
            last = self._pending[-1]
            end_pts = max(p.pts for p in self._pending) + last_duration
            if media_end is not None:
                end_pts = min(end_pts, media_end)
            self._flush(next_dts=last.dts + last_duration, next_pts=end_pts)

    def _flush(self, next_dts: int, next_pts: int) -> None:
        pending, self._pending = self._pending, []
        assert self._first_dts is not None
        shift = self._first_dts
        samples = []
        for i, p in enumerate(pending):
            following = pending[i + 1].dts if i + 1 < len(pending) else next_dts
            # Decode times start at zero; composition offsets keep presentation at the
            # encoder's pts (zero for the first picture), signed where B-frames need it.
            samples.append(cmaf.Sample(p.data, max(1, following - p.dts),
                                       p.pts - (p.dts - shift), p.sync))
        index = len(self.segments) + 1
        uri = f"seg_{index:05d}.m4s"
        data = cmaf.media_segment(self.track, index, pending[0].dts - shift, samples)
        self.output.write(f"{self.name}/{uri}", data)
        start_pts = min(p.pts for p in pending)
        duration = (next_pts - start_pts) / self.track.timescale
        self.segments.append(hls.SegmentInfo(uri, duration, len(data)))

    def playlist(self) -> str:
        return hls.media_playlist(self.segments)


class VideoLane:
    """One video rendition: scaler, x264 encoder and its track writer."""

    def __init__(self, rendition: Rendition, frame_rate: Fraction, preset: str,
                 output: Output) -> None:
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
        self.writer = TrackWriter(rendition.name, track, output)
        self.writer.start()
        self.frame_duration = round(VIDEO_TIMESCALE / frame_rate)

    def encode(self, frame: av.VideoFrame | None, pts: int = 0, keyframe: bool = False) -> None:
        if frame is not None:
            frame = frame.reformat(width=self.rendition.width, height=self.rendition.height,
                                   format="yuv420p")
            frame.pts = pts
            frame.time_base = self.encoder.time_base
            frame.pict_type = PictureType.I if keyframe else PictureType.NONE
        for packet in self.encoder.encode(frame):
            self.writer.add(cmaf.annexb_to_avcc(bytes(packet)), packet.pts, packet.dts,
                            packet.is_keyframe, cut=packet.is_keyframe)

    def finish(self) -> None:
        self.encode(None)
        self.writer.close(self.frame_duration)


class AudioLane:
    """Stereo AAC at 48 kHz whatever the source layout, cut at the same boundaries as video."""

    def __init__(self, output: Output, segment_seconds: float) -> None:
        self.resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE,
                                           frame_size=1024)
        enc = av.CodecContext.create("aac", "w")
        enc.sample_rate, enc.layout, enc.format = AUDIO_RATE, "stereo", "fltp"
        enc.bit_rate = AUDIO_KBPS * 1000
        enc.time_base = Fraction(1, AUDIO_RATE)
        enc.flags |= Flags.global_header
        enc.open()
        self.encoder = enc
        track = cmaf.AudioTrack(bytes(enc.extradata), 2, AUDIO_RATE, AUDIO_KBPS * 1000)
        self.writer = TrackWriter(AUDIO_NAME, track, output)
        self.writer.start()
        self.segment_ticks = round(segment_seconds * AUDIO_RATE)
        self._samples = 0
        self._next_cut = self.segment_ticks
        self._first_pts: int | None = None

    def encode(self, frame: av.AudioFrame | None) -> None:
        frame_list = self.resampler.resample(frame)
        if frame is None:
            frame_list = [*frame_list, None]
        for resampled in frame_list:
            if resampled is not None:
                resampled.pts = self._samples
                resampled.time_base = self.encoder.time_base
                self._samples += resampled.samples
            for packet in self.encoder.encode(resampled):
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

    def finish(self) -> None:
        self.encode(None)
        self.writer.close(1024, media_end=self._samples)


def _frame_rate(stream: av.video.stream.VideoStream) -> Fraction:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 1 <= rate <= 240:
            return Fraction(rate)
    return Fraction(30)


def _encode_poster(frame: av.VideoFrame, width: int, height: int) -> bytes:
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qmin": "2", "qmax": "6"}
    picture = frame.reformat(width=width, height=height, format="yuvj420p")
    picture.pts = 0
    return b"".join(bytes(p) for p in [*enc.encode(picture), *enc.encode(None)])


def _open(input_path: Path) -> av.container.InputContainer:
    try:
        size = input_path.stat().st_size
    except OSError as exc:
        raise PackagingError("unreadable_input", f"cannot read the input: {exc.strerror}") from exc
    if size == 0:
        raise PackagingError("empty_input", "the upload is empty (0 bytes)")
    try:
        return av.open(str(input_path), options={"probesize": "20000000"})
    except (av.error.FFmpegError, UnicodeDecodeError) as exc:
        raise PackagingError("not_a_video", f"FFmpeg cannot read this file as media: {exc}") from exc


def package(
    input_path: Path | str,
    outdir: Path | str | None = None,
    *,
    output: Output | None = None,
    ladder: tuple[Rung, ...] = DEFAULT_LADDER,
    segment_seconds: float = 6.0,
    preset: str = "veryfast",
    max_seconds: float = 4 * 3600.0,
    max_height: int = 2160,
    progress: Progress | None = None,
) -> PackageResult:
    """Package `input_path` into HLS: renditions first, `master.m3u8` last.

    Give `outdir` (a directory) or `output` (any Output). Raises PackagingError.
    """
    if output is None:
        if outdir is None:
            raise ValueError("give outdir or output")
        output = DirectoryOutput(outdir)
    input_path = Path(input_path)
    with _open(input_path) as container:
        video = next(iter(container.streams.video), None)
        audio = next(iter(container.streams.audio), None)
        if video is None and audio is None:
            raise PackagingError("no_media", "the file has neither a video nor an audio stream")
        duration = container.duration / 1_000_000 if container.duration else None
        if duration is not None and duration > max_seconds:
            raise PackagingError("too_long", f"the video lasts {duration:.0f} s; "
                                             f"the limit is {max_seconds:.0f} s")
        lanes: list[VideoLane] = []
        frame_rate = Fraction(30)
        if video is not None:
            width, height = video.codec_context.width, video.codec_context.height
            if not width or not height:
                raise PackagingError("not_a_video", "the video stream has no picture size")
            if min(width, height) > max_height:
                raise PackagingError("too_large", f"the video is {width}x{height}; "
                                                  f"the limit is {max_height} lines")
            frame_rate = _frame_rate(video)
            video.thread_type = "AUTO"
            lanes = [VideoLane(r, frame_rate, preset, output) for r in choose(width, height, ladder)]
        audio_lane = AudioLane(output, segment_seconds) if audio is not None else None
        total_parts = math.ceil(duration / segment_seconds) if duration else 0

        t0: float | None = None
        last_pts = -1
        next_cut = 0.0
        parts = 0
        frames = 0
        poster: av.VideoFrame | None = None
        poster_at = min(POSTER_AT, (duration or 0) / 3)
        streams = [s for s in (video, audio) if s is not None]
        try:
            for packet in container.demux(*streams):
                try:
                    decoded = packet.decode()
                except av.error.InvalidDataError:
                    continue  # a damaged packet: skip it, as players do
                for frame in decoded:
                    if isinstance(frame, av.AudioFrame):
                        if audio_lane is not None:
                            audio_lane.encode(frame)
                        continue
                    seconds = frame.time if frame.time is not None else frames / frame_rate
                    if t0 is None:
                        t0 = seconds
                    rel = seconds - t0
                    pts = round(rel * VIDEO_TIMESCALE)
                    if pts <= last_pts:
                        continue  # a repeated or backwards timestamp cannot be presented
                    last_pts = pts
                    keyframe = rel >= next_cut - 0.001
                    if keyframe:
                        while next_cut <= rel + 0.001:
                            next_cut += segment_seconds
                        if frames:
                            parts += 1
                            if progress:
                                progress(parts, max(total_parts, parts + 1))
                    for lane in lanes:
                        lane.encode(frame, pts, keyframe)
                    if poster is None and rel >= poster_at:
                        poster = frame
                    frames += 1
        except av.error.FFmpegError as exc:
            raise PackagingError("corrupt_input", f"decoding failed: {exc}") from exc
        if video is not None and frames == 0:
            raise PackagingError("no_frames", "the video stream holds no decodable picture")
        for lane in lanes:
            lane.finish()
        if audio_lane is not None:
            audio_lane.finish()

    return _publish(output, lanes, audio_lane, frame_rate, poster, progress, parts + 1)


def _publish(output: Output, lanes: list[VideoLane], audio_lane: AudioLane | None,
             frame_rate: Fraction, poster: av.VideoFrame | None, progress: Progress | None,
             parts: int) -> PackageResult:
    if audio_lane is not None and not audio_lane.writer.segments:
        audio_lane = None  # an audio stream with no samples in it
    if not lanes and audio_lane is None:
        raise PackagingError("no_frames", "nothing decodable in the file")
    videos = []
    for lane in lanes:
        output.write(f"{lane.rendition.name}/index.m3u8", lane.writer.playlist().encode())
        videos.append(hls.VideoVariant(
            f"{lane.rendition.name}/index.m3u8", lane.rendition.width, lane.rendition.height,
            float(frame_rate), lane.writer.track.codecs, lane.writer.segments))
    audio_variant = None
    if audio_lane is not None:
        output.write(f"{AUDIO_NAME}/index.m3u8", audio_lane.writer.playlist().encode())
        audio_variant = hls.AudioVariant(f"{AUDIO_NAME}/index.m3u8",
                                         audio_lane.writer.track.codecs, 2,
                                         audio_lane.writer.segments)
    if poster is not None and lanes:
        top = lanes[0].rendition
        output.write("thumbs/poster.jpg", _encode_poster(poster, top.width, top.height))
    # Written last: its presence means the video is complete.
    output.write("master.m3u8", hls.master_playlist(videos, audio_variant).encode())
    first = lanes[0].writer if lanes else audio_lane.writer  # type: ignore[union-attr]
    if progress:
        progress(parts, parts)
    root = getattr(output, "root", None)
    return PackageResult(
        master=(root / "master.m3u8") if root is not None else "master.m3u8",
        duration=sum(s.duration for s in first.segments),
        renditions=[lane.rendition.name for lane in lanes] + ([AUDIO_NAME] if audio_lane else []),
        segments=len(first.segments),
    )
