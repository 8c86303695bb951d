"""The whole stack, started the way a user starts it: `reel up --demo`."""

from __future__ import annotations

import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

START_TIMEOUT = 420.0


def free_port_base(span: int = 23) -> int:
    """A base port with `span` free ports after it, below Linux's ephemeral range (32768 on):
    no outgoing connection of a parallel test takes one between this check and `reel up`.
    Each pytest-xdist worker draws from its own slice: two workers starting stacks at the same
    moment (from pid and clock, they had picked bases 7 apart) never pick overlapping ports."""
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:] or 0)
    workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))
    width = (32768 - 10000) // workers
    low = 10000 + (worker % workers) * width
    for _ in range(200):
        base = random.randrange(low, low + width - span)
        try:
            for offset in range(span):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", base + offset))
        except OSError:
            time.sleep(0.01)
            continue
        return base
    raise RuntimeError("no free ports")


@dataclass
class UpProcess:
    """A running `reel up`, with what it printed."""

    proc: subprocess.Popen
    data: Path
    port_base: int
    lines: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = None

    @classmethod
    def start(cls, data: Path, *extra: str, python: Sequence[str] = ("-m", "reel")) -> UpProcess:
        """`python` runs the command line (tests may wrap it: `-c CODE`)."""
        port_base = free_port_base()
        proc = subprocess.Popen(
            [sys.executable, *python, "up", "--data", str(data), "--port-base", str(port_base),
             *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
        )
        up = cls(proc, data, port_base)
        up._reader = threading.Thread(target=up._read, daemon=True)
        up._reader.start()
        return up

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: str, timeout: float = START_TIMEOUT) -> re.Match:
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for line in self.lines[seen:]:
                if match := re.search(pattern, line):
                    return match
            seen = len(self.lines)
            if self.proc.poll() is not None and self._reader is not None:
                self._reader.join(2)
                if not any(re.search(pattern, line) for line in self.lines):
                    break
            time.sleep(0.1)
        logs = "\n".join(self.lines[-40:])
        raise AssertionError(f"`reel up` never printed {pattern!r}:\n{logs}")

    def interrupt(self, timeout: float = 20.0) -> int:
        """Ctrl-C, as a user would press it."""
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise

    def url(self, offset: int) -> str:
        return f"http://127.0.0.1:{self.port_base + offset}"


@dataclass(frozen=True)
class Demo:
    up: UpProcess
    video_id: str
    playback_url: str
    watch_url: str

    @property
    def geo(self) -> str:
        return self.up.url(0)

    @property
    def control(self) -> str:
        return self.up.url(1)

    @property
    def origin(self) -> str:
        """The default region's origin (eu-west)."""
        return self.up.url(2)

    @property
    def origins(self) -> list[str]:
        """One per region, in the order of `edges`."""
        return [self.up.url(2), self.up.url(3)]

    @property
    def edges(self) -> list[str]:
        return [self.up.url(10), self.up.url(11)]


def demo_stack(tmp_path_factory: pytest.TempPathFactory, *args: str) -> Iterator[Demo]:
    up = UpProcess.start(tmp_path_factory.mktemp("reel-data"), "--demo", *args)
    try:
        video_id = up.wait_for(r"demo video (\S+) is ready").group(1)
        playback = up.wait_for(r"playback\s+(\S+)").group(1)
        watch = up.wait_for(r"watch\s+(\S+)").group(1)
        yield Demo(up, video_id, playback, watch)
    finally:
        if up.proc.poll() is None:
            up.interrupt()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`reel up --demo` without its live test pattern: a real-time ladder running through the
    whole session would take most of a core from every other test (tests/e2e/test_live.py starts
    the whole demo, live included)."""
    yield from demo_stack(tmp_path_factory, "--no-demo-live")
