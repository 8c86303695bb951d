"""A small generated clip (the ffmpeg command line's test sources): what creators and the seeder
upload. Nothing is downloaded."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path


def make_clip(seconds: float, *, width: int = 426, height: int = 240, tone: int = 440) -> bytes:
    """An H.264/AAC MP4 of a moving test pattern and a tone."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.mp4"
        subprocess.run(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{height}:rate=15:duration={seconds}", "-f", "lavfi", "-i",
             f"sine=frequency={tone}:duration={seconds}", "-c:v", "libx264", "-preset", "ultrafast",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-movflags", "+faststart", str(out)],
            check=True, timeout=120)
        return out.read_bytes()
