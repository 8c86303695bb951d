"""Progress a person can see: reports rise steadily to the end, single pass and parallel alike."""

from __future__ import annotations

from pathlib import Path

import pytest

from packager import package
from packager.progress import Report
from packager.testclip import make_test_clip


@pytest.mark.parametrize("workers", [1, 2])
def test_progress_rises_steadily_to_done(tmp_path: Path, workers: int) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=26, width=320, height=180)
    reports: list[Report] = []
    package(clip, tmp_path / "out", progress=reports.append, workers=workers, chunk_seconds=6)
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert len({round(f, 2) for f in fractions if f < 1}) >= 5  # many steps, not a few jumps
    stages = [r.stage for r in reports]
    assert stages[-1] == "done" and stages.index("finishing") < stages.index("done")
    assert all(r.total == pytest.approx(26, abs=0.1) for r in reports)
