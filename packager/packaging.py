"""`package()`: the packager's one entry point, above the single-pass job and the parallel one."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path

from packager.ladder import DEFAULT_LADDER, Rung
from packager.output import DirectoryOutput, Output
from packager.parallel import package_parallel
from packager.pipeline import Job, PackageResult
from packager.progress import Progress
from packager.source import Limits, Source


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
    rendition's EVENT playlist `name` ("v144/index.m3u8") can be played; `progress(report)` is
    called a few times a second (packager.progress.Report). Raises PackagingError.
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
            return package_parallel(source, output, output_factory, workers=workers,
                                    chunk_seconds=chunk_seconds, ladder=ladder,
                                    segment_seconds=segment_seconds, preset=preset, limits=limits,
                                    progress=progress, on_playable=on_playable)
        return Job(source, output, ladder=ladder, segment_seconds=segment_seconds, preset=preset,
                   progressive=progressive, progress=progress, deadline=deadline,
                   on_playable=on_playable).run()
    finally:
        source.close()
