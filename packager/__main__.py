"""`python -m packager INPUT OUTDIR`: package one file, reporting as JSON lines on stdout.

The worker runs each job through this entry point in a child process, so a job can be bounded in
time and memory and killed without taking the worker down. Lines: {"progress": [done, total]},
then {"result": {...}} or {"error": {"reason": ..., "message": ...}}.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from packager.pipeline import PackagingError, package


def _emit(obj: dict) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m packager INPUT OUTDIR", file=sys.stderr)
        return 64
    try:
        result = package(Path(argv[0]), Path(argv[1]),
                         progress=lambda done, total: _emit({"progress": [done, total]}))
    except PackagingError as exc:
        _emit({"error": {"reason": exc.reason, "message": str(exc)}})
        return 2
    _emit({"result": {"duration": result.duration, "renditions": result.renditions,
                      "segments": result.segments}})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
