"""A long video cut into chunks on segment boundaries, encoded by parallel processes, stitched.

Each chunk process seeks to the keyframe before its window, decodes from there, and encodes only
the pictures inside the window, its first picture an IDR; it writes its segments (numbered where
the whole video's numbering puts them) straight to the output, and closes its last segment
exactly where the next chunk's first picture starts, so the stitched timeline has no gap. This
process meanwhile encodes the audio, then writes the playlists as chunks complete in order (EVENT
while running), the storyboard from the chunks' tiles, and `master.m3u8` last.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import queue
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, wait
from pathlib import Path

import av

from packager import hls
from packager.errors import PackagingError
from packager.ladder import Rung
from packager.lanes import MIN_TAIL, AudioLane
from packager.output import Output
from packager.pipeline import ChunkResult, Job, PackageResult, Window, audio_lane, publish
from packager.progress import Progress, Report, Tracker
from packager.source import Limits, Source
from packager.thumbs import Thumbnails

OutputFactory = Callable[[], Output]


def windows(duration: float, segment_seconds: float, chunk_seconds: float) -> list[Window]:
    """Chunks of whole segments covering `duration`; a remainder too short to be a segment of its
    own joins the last chunk."""
    per_chunk = max(1, round(chunk_seconds / segment_seconds))
    span = per_chunk * segment_seconds
    count = max(1, math.ceil((duration - MIN_TAIL) / span))
    return [Window(i * span, (i + 1) * span if i + 1 < count else None, i * per_chunk + 1)
            for i in range(count)]


class _ChunkProgress:
    """A chunk's position in its window, sent to the job that adds them up (picklable: it holds
    a manager's queue)."""

    def __init__(self, positions: queue.Queue, index: int, start: float) -> None:
        self.positions, self.index, self.start = positions, index, start

    def __call__(self, report: Report) -> None:
        self.positions.put((self.index, report.done - self.start))


def _encode_chunk(input_path: Path, make_output: OutputFactory, ladder: tuple[Rung, ...],
                  segment_seconds: float, preset: str, limits: Limits, window: Window,
                  progress: _ChunkProgress) -> ChunkResult:
    source = Source(input_path, limits)
    output = make_output()
    try:
        return Job(source, output, ladder=ladder, segment_seconds=segment_seconds, preset=preset,
                   window=window, progress=progress).run_chunk()
    finally:
        source.close()
        # A StoreOutput holds a thread and an event loop (and an S3 client): this pool process
        # may run more chunks, so they go now.
        if close := getattr(output, "close", None):
            close()


def _tile(width: int, height: int, planes: list[bytes]) -> av.VideoFrame:
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane, data in zip(frame.planes, planes, strict=True):
        plane.update(data)
    return frame


class Stitcher:
    """Joins chunk results in timeline order, publishing EVENT playlists as the prefix grows."""

    def __init__(self, output: Output, count: int,
                 on_playable: Callable[[str], None] | None = None) -> None:
        self.output = output
        self.on_playable = on_playable
        self.results: dict[int, ChunkResult] = {}
        self.joined = 0
        self.count = count
        self.segments: dict[str, list[hls.SegmentInfo]] = {}

    def add(self, index: int, result: ChunkResult) -> None:
        self.results[index] = result
        while self.joined in self.results:
            chunk = self.results[self.joined]
            first = self.results[0]
            if chunk.avcc != first.avcc:  # every chunk's encoder must agree with init.mp4
                raise PackagingError("internal", "chunks disagree on the H.264 parameter sets")
            for name, segs in chunk.segments.items():
                self.segments.setdefault(name, []).extend(segs)
            self.joined += 1
            for name, segs in self.segments.items():
                self.output.write(f"{name}/index.m3u8", hls.media_playlist(
                    segs, playlist_type="EVENT", ended=False).encode())
            if self.joined == 1 and self.on_playable is not None:
                self.on_playable(f"{list(self.segments)[-1]}/index.m3u8")

    def ordered(self) -> list[ChunkResult]:
        return [self.results[i] for i in range(self.count)]


def package_parallel(
    source: Source,
    output: Output,
    make_output: OutputFactory,
    *,
    workers: int,
    chunk_seconds: float,
    ladder: tuple[Rung, ...],
    segment_seconds: float,
    preset: str,
    limits: Limits,
    progress: Progress | None = None,
    on_playable: Callable[[str], None] | None = None,
) -> PackageResult:
    """Package an opened `source` (a video of known duration) with `workers` processes.
    `output` is this process's; `make_output` must be picklable, each chunk process opening its
    own Output with it: e.g. functools.partial(DirectoryOutput, path)."""
    assert source.video is not None and source.duration
    plan = windows(source.duration, segment_seconds, chunk_seconds)
    stitcher = Stitcher(output, len(plan), on_playable)
    tracker = Tracker(progress, source.duration)
    positions = [0.0] * len(plan)  # seconds done in each chunk's window
    context = multiprocessing.get_context("spawn")  # no threads or codecs copied by fork
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool, \
            ThreadPoolExecutor(max_workers=1) as thread, context.Manager() as manager:
        reports = manager.Queue()
        pending: dict[Future, int] = {
            pool.submit(_encode_chunk, source.path, make_output, ladder, segment_seconds,
                        preset, limits, window, _ChunkProgress(reports, index, window.start)): index
            for index, window in enumerate(plan)}
        # Audio on a thread of this process, so the chunks' progress is told meanwhile.
        audio_done = thread.submit(_encode_audio, source, output, segment_seconds)
        while pending:
            done, _ = wait(pending, timeout=tracker.interval, return_when=FIRST_COMPLETED)
            with contextlib.suppress(queue.Empty):
                while True:
                    index, seconds = reports.get_nowait()
                    positions[index] = max(positions[index], seconds)
            for future in done:
                index = pending.pop(future)
                stitcher.add(index, future.result())
                positions[index] = (plan[index].end or source.duration) - plan[index].start
            tracker.at(sum(positions))
        audio = audio_done.result()
    return _publish(output, source, stitcher, audio, tracker)


def _encode_audio(source: Source, output: Output, segment_seconds: float) -> AudioLane | None:
    if source.audio is None:
        return None
    lane = audio_lane(source, output, segment_seconds, progressive=False)
    for packet in source.container.demux(source.audio):
        try:
            frames = packet.decode()
        except av.error.InvalidDataError:
            continue
        for frame in frames:
            if frame.time is not None:
                lane.encode(frame, frame.time - source.start)
    return lane


def _publish(output: Output, source: Source, stitcher: Stitcher, audio: AudioLane | None,
             tracker: Tracker) -> PackageResult:
    tracker.enter("finishing")
    chunks = stitcher.ordered()
    media_end = max(c.media_end for c in chunks)
    first = chunks[0]
    videos = []
    for name, segs in stitcher.segments.items():
        output.write(f"{name}/index.m3u8", hls.media_playlist(segs).encode())
        output.write(f"{name}/iframes.m3u8", hls.iframe_playlist(segs).encode())
        width, height = first.sizes[name]
        videos.append(hls.VideoVariant(f"{name}/index.m3u8", f"{name}/iframes.m3u8", width, height,
                                       float(source.frame_rate), first.codecs[name], segs))
    top = videos[0]
    thumbs = Thumbnails(top.width, top.height, source.duration, (top.width, top.height), output)
    thumbs.poster = next((c.poster for c in chunks if c.poster), None)
    thumbs.tiles = [(t, _tile(w, h, planes)) for c in chunks for t, w, h, planes in c.tiles]
    if thumbs.tiles:
        thumbs.tile = (thumbs.tiles[0][1].width, thumbs.tiles[0][1].height)  # as the chunks cut them
    tracker.enter("thumbnails")
    thumbs.finish(media_end)
    if audio is not None:
        audio.finish(media_end)
    result = publish(output, videos, audio)
    tracker.enter("done")
    return result
