"""Test helpers that read media the way players and ffprobe do."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def ffprobe_json(*args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args],
                         check=True, capture_output=True, timeout=120).stdout
    return json.loads(out)


def keyframe_flags(init: Path, segment: Path, tmp: Path) -> list[bool]:
    """For each video packet of one segment (decode order), whether it is a keyframe."""
    joined = tmp / f"{segment.parent.name}-{segment.name}.mp4"
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    packets = ffprobe_json("-select_streams", "v", "-show_entries", "packet=flags",
                           str(joined))["packets"]
    return ["K" in p["flags"] for p in packets]
