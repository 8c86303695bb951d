"""Progress of a packaging job: what it reports, and how a person or a script is shown it.

A job reports where it is on the source's timeline (seconds done of seconds total) and which stage
it is in; speed (a multiple of real time), elapsed and remaining time are worked out by whoever
shows it. Shown as a live bar on a terminal (rich: it sizes to the terminal, redraws in place and
clears cleanly, which a hand-written carriage-return loop gets wrong on resize and on errors), as a
line every few seconds elsewhere (a pipe, CI, a log file), or as JSON lines for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO, Protocol

STAGES = ("encode", "finishing", "thumbnails", "done")


@dataclass(frozen=True)
class Report:
    stage: str  # one of STAGES
    done: float  # seconds of the source processed
    total: float  # the source's duration in seconds; 0 when it is not known

    @property
    def fraction(self) -> float:
        if self.stage == "done":
            return 1.0
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0


Progress = Callable[[Report], None]


@dataclass
class Tracker:
    """Turns a job's position into Reports: at most one per `interval` seconds, and always on a
    change of stage, so a long job reports steadily without flooding its reader."""

    progress: Progress | None
    total: float
    interval: float = 0.25
    stage: str = "encode"
    done: float = 0.0
    _sent: float = field(default=float("-inf"))

    def at(self, seconds: float) -> None:
        self.done = max(self.done, seconds)
        now = time.monotonic()
        if self.progress is not None and now - self._sent >= self.interval:
            self._sent = now
            self.progress(Report(self.stage, self.done, self.total))

    def enter(self, stage: str) -> None:
        self.stage = stage
        if stage == "done":
            self.done = max(self.done, self.total)
        if self.progress is not None:
            self._sent = time.monotonic()
            self.progress(Report(stage, self.done, self.total))


@dataclass
class Meter:
    """Speed, elapsed and remaining time, from reports as they come."""

    started: float = field(default_factory=time.monotonic)

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def speed(self, report: Report) -> float:
        """Seconds of source per second of wall time."""
        elapsed = self.elapsed()
        return report.done / elapsed if elapsed > 0 else 0.0

    def remaining(self, report: Report) -> float | None:
        speed = self.speed(report)
        if report.stage == "done":
            return 0.0
        if report.total <= 0 or speed <= 0:
            return None
        return max(0.0, (report.total - report.done) / speed)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class Display(Protocol):
    def __call__(self, report: Report) -> None: ...

    def close(self) -> None:
        """Clears what is drawn; called before the result or the error is printed."""


class JsonLines:
    """One JSON object a report, for scripts: {"stage", "percent", "done", "total", "speed",
    "elapsed", "eta"}."""

    def __init__(self, stream: IO[str] = sys.stdout) -> None:
        self.stream, self.meter = stream, Meter()

    def __call__(self, report: Report) -> None:
        remaining = self.meter.remaining(report)
        self.stream.write(json.dumps({
            "stage": report.stage, "percent": round(100 * report.fraction, 1),
            "done": round(report.done, 3), "total": round(report.total, 3),
            "speed": round(self.meter.speed(report), 3), "elapsed": round(self.meter.elapsed(), 3),
            "eta": None if remaining is None else round(remaining, 1),
        }) + "\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class Lines:
    """A plain line every `every` seconds (and on each stage change): for logs and pipes."""

    def __init__(self, stream: IO[str] = sys.stderr, every: float = 5.0) -> None:
        self.stream, self.every, self.meter = stream, every, Meter()
        self._last, self._stage = float("-inf"), ""

    def __call__(self, report: Report) -> None:
        now = time.monotonic()
        if report.stage == self._stage and now - self._last < self.every:
            return
        self._last, self._stage = now, report.stage
        self.stream.write(
            f"{report.stage}: {100 * report.fraction:5.1f}%  {self.meter.speed(report):.2f}x  "
            f"elapsed {_clock(self.meter.elapsed())}  left {_clock(self.meter.remaining(report))}\n")
        self.stream.flush()

    def close(self) -> None:
        pass


class Bar:
    """A live bar on a terminal: stage, bar, percent, speed, elapsed, time left."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

        self.meter = Meter()
        self.progress = Progress(
            TextColumn("{task.fields[stage]:<10}"), BarColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[speed]}  elapsed {task.fields[elapsed]}  left {task.fields[left]}"),
            console=Console(file=stream), transient=True, auto_refresh=False)
        self.task = self.progress.add_task("package", total=100, stage="encode", speed="-",
                                           elapsed="00:00", left="--:--")
        self.progress.start()

    def __call__(self, report: Report) -> None:
        self.progress.update(
            self.task, completed=100 * report.fraction, stage=report.stage,
            speed=f"{self.meter.speed(report):.2f}x", elapsed=_clock(self.meter.elapsed()),
            left=_clock(self.meter.remaining(report)))
        self.progress.refresh()

    def close(self) -> None:
        self.progress.stop()


class Silent:
    def __call__(self, report: Report) -> None:
        pass

    def close(self) -> None:
        pass


def display(mode: str, stream: IO[str] = sys.stderr) -> Display:
    """`mode`: "auto" (a bar on a terminal, lines elsewhere), "bar", "lines", "json" (to stdout)
    or "none"."""
    if mode == "auto":
        mode = "bar" if stream.isatty() else "lines"
    return {"bar": lambda: Bar(stream), "lines": lambda: Lines(stream), "json": JsonLines,
            "none": Silent}[mode]()
