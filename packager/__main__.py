"""`python -m packager INPUT (OUTDIR | --store SPEC --prefix PREFIX)`: one job, as JSON lines.

The worker runs each job through this entry point in a child process, so a job can be bounded in
time and memory and killed without taking the worker down. With --store the renditions are
published into the store as they are written. Lines on stdout: {"progress": [done, total]}
(milliseconds of the source, a few times a second);
{"preview": "v144/index.m3u8"} once that rendition can be played; then {"result": {...}} or
{"error": {"reason": ..., "message": ...}}.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from packager.errors import PackagingError
from packager.output import DirectoryOutput, Output
from packager.packaging import package
from packager.progress import Report
from packager.publish import StoreOutput
from packager.source import Limits

_EMIT = threading.Lock()  # lanes report from their own threads


def _emit(obj: dict) -> None:
    with _EMIT:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def _emit_progress(report: Report) -> None:
    if report.total > 0:
        done = report.total if report.stage == "done" else min(report.done, report.total)
        _emit({"progress": [round(done * 1000), round(report.total * 1000)]})


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m packager")
    parser.add_argument("input", type=Path)
    parser.add_argument("outdir", type=Path, nargs="?")
    parser.add_argument("--store", help="object store (directory or s3://...) to publish into")
    parser.add_argument("--prefix", default="", help="key prefix in the store, e.g. vod/ID/")
    parser.add_argument("--max-seconds", type=float, default=Limits.max_seconds)
    parser.add_argument("--max-processing-seconds", type=float, default=None)
    parser.add_argument("--workers", type=int, default=1,
                        help="processes for long inputs, cut into chunks encoded in parallel")
    args = parser.parse_args(argv)
    if (args.outdir is None) == (args.store is None):
        parser.error("give OUTDIR or --store")

    factory: Callable[[], Output]
    if args.store:
        factory = functools.partial(StoreOutput.open, args.store, args.prefix)
    else:
        factory = functools.partial(DirectoryOutput, args.outdir)
    with contextlib.ExitStack() as stack:
        output = factory()
        if isinstance(output, StoreOutput):
            stack.enter_context(output)
        limits = Limits(max_seconds=args.max_seconds,
                        max_processing_seconds=args.max_processing_seconds)
        try:
            result = package(args.input, output=output, output_factory=factory, limits=limits,
                             workers=args.workers,
                             progress=_emit_progress,
                             on_playable=lambda name: _emit({"preview": name}))
        except PackagingError as exc:
            _emit({"error": {"reason": exc.reason, "message": str(exc)}})
            return 2
    _emit({"result": {"duration": result.duration, "renditions": result.renditions,
                      "segments": result.segments}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
