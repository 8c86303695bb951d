"""reel.supervisor, with tiny real services (`python -c ...`): what `reel up` does when one dies."""

from __future__ import annotations

import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from reel.supervisor import GaveUp, Supervisor

CRASHES = [sys.executable, "-c", "import sys; print('crashing', flush=True); sys.exit(3)"]
RUNS = [sys.executable, "-c", "import time; time.sleep(120)"]
FAST = {"first_delay": 0.05, "max_delay": 0.15, "fast_seconds": 30.0}


def poll_until(services: Supervisor, done: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "not reached"
        services.poll()
        time.sleep(0.01)


def test_a_failing_service_restarts_with_backoff_then_everything_gives_up(tmp_path: Path) -> None:
    lines: list[str] = []
    services = Supervisor({"crashy": CRASHES, "steady": RUNS}, tmp_path / "logs", burst=4,
                          say=lines.append, **FAST)
    services.start()
    steady = services.procs["steady"]
    try:
        with pytest.raises(GaveUp) as gave_up:
            poll_until(services, lambda: False)
        assert str(gave_up.value) == (
            "crashy failed 4 times in a row, each within 30 s of starting (last: code 3); "
            f"see {tmp_path / 'logs' / 'crashy.log'}")
        exits = [re.sub(r"after [0-9.]+ s", "after T s", line) for line in lines if "exited" in line]
        assert exits == [f"crashy exited (code 3) after T s; starting it again in {delay} s"
                         for delay in ("0.05", "0.1", "0.15")]  # doubling, capped
        assert sum("crashy started again (pid" in line for line in lines) == 3
        assert (tmp_path / "logs" / "crashy.log").read_text() == "crashing\n" * 4
        # The other service ran on, untouched, until the owner stopped everything.
        assert services.procs["steady"] is steady and steady.poll() is None
    finally:
        services.stop()
    assert steady.returncode == -signal.SIGTERM


def test_a_killed_service_is_started_again_and_the_others_keep_running(tmp_path: Path) -> None:
    lines: list[str] = []
    services = Supervisor({"edge": RUNS, "geo": RUNS}, tmp_path / "logs", say=lines.append, **FAST)
    services.start()
    edge, geo = services.procs["edge"], services.procs["geo"]
    try:
        edge.send_signal(signal.SIGKILL)
        poll_until(services, lambda: "edge" in services.procs and services.procs["edge"] is not edge)
        assert re.fullmatch(r"edge exited \(killed by SIGKILL\) after [0-9.]+ s; starting it again "
                            r"in 0.05 s", lines[0])
        assert lines[1] == f"edge started again (pid {services.procs['edge'].pid})"
        assert services.procs["edge"].poll() is None
        assert services.procs["geo"] is geo and geo.poll() is None
    finally:
        services.stop()


def test_a_service_that_ran_a_while_before_failing_starts_over_from_the_first_delay(
        tmp_path: Path) -> None:
    lines: list[str] = []
    slow = [sys.executable, "-c", "import sys, time; time.sleep(0.5); sys.exit(1)"]
    services = Supervisor({"slow": slow}, tmp_path / "logs", burst=2, say=lines.append,
                          **{**FAST, "fast_seconds": 0.3})
    services.start()
    try:
        poll_until(services, lambda: sum("exited" in line for line in lines) >= 3)
        assert all(line.endswith("starting it again in 0.05 s") for line in lines if "exited" in line)
    finally:
        services.stop()


def test_a_clean_exit_is_logged_and_not_restarted(tmp_path: Path) -> None:
    lines: list[str] = []
    services = Supervisor({"done": [sys.executable, "-c", "pass"]}, tmp_path / "logs",
                          say=lines.append, **FAST)
    services.start()
    poll_until(services, lambda: bool(lines))
    for _ in range(20):
        services.poll()
        time.sleep(0.01)
    assert len(lines) == 1 and re.fullmatch(r"done exited \(code 0\) after [0-9.]+ s; not restarted",
                                            lines[0])
    assert services.procs == {}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_what_a_failed_service_leaves_behind_dies_with_it(tmp_path: Path) -> None:
    """An edge's workers, say: children still running when their service died."""
    leaves_a_child = [sys.executable, "-c", "import subprocess, sys, time; p = subprocess.Popen("
                      "[sys.executable, '-c', 'import time; time.sleep(120)']); print(p.pid, flush=True); "
                      "time.sleep(0.2); sys.exit(1)"]
    lines: list[str] = []
    services = Supervisor({"parent": leaves_a_child}, tmp_path / "logs", say=lines.append, **FAST)
    services.start()
    try:
        poll_until(services, lambda: bool(lines))
        child = int((tmp_path / "logs" / "parent.log").read_text().split()[0])
        poll_until(services, lambda: not _alive(child), timeout=10)
    finally:
        services.stop()
