"""Child processes kept running the way systemd's `Restart=on-failure` keeps a unit running.

Each service is a named command. When one exits, the exit is logged (its code, or the signal
that killed it); if it failed (a non-zero code or a signal) it is started again after a delay
that doubles from `first_delay` up to `max_delay`, while the others keep running. A service
that ran for `fast_seconds` or more before failing starts over from `first_delay`. One that
fails `burst` times in a row, each time within `fast_seconds` of starting, is not started again:
`poll()` raises GaveUp, and the owner stops everything. A clean exit (code 0: the service was
told to stop) is logged and not restarted. Each service runs in its own process group; what it
leaves behind when it exits (an edge's workers, a packaging child) is killed with it, as systemd
kills what is left of a unit, so a restarted service never meets its predecessor's children.

Nothing runs in the background: the owner calls `poll()` often (every few hundred
milliseconds), and restarts happen in that call, from the owner's thread. Services that are never
polled are never restarted (tests use that to kill and restart one by hand).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


class GaveUp(RuntimeError):
    """A service failed too often, too fast; the message says which and where its log is."""


@dataclass
class _Service:
    name: str
    argv: Sequence[str]
    log: Path
    proc: subprocess.Popen | None = None
    started: float = 0.0
    fast_failures: int = 0  # in a row
    restart_at: float | None = None


def describe(returncode: int) -> str:
    """How a process ended, as a person says it: `code 3`, `killed by SIGKILL`."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"code {returncode}"


@dataclass
class Supervisor:
    """Starts, watches and stops named commands; each one's output goes to LOGS/NAME.log."""

    commands: Mapping[str, Sequence[str]]
    logs: Path
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    first_delay: float = 1.0
    max_delay: float = 30.0
    fast_seconds: float = 10.0
    burst: int = 5
    say: Callable[[str], None] = field(default=lambda line: print(line, file=sys.stderr, flush=True))
    _services: dict[str, _Service] = field(default_factory=dict, init=False)

    @property
    def procs(self) -> dict[str, subprocess.Popen]:
        """The process of each service running (or exited since the last `poll()`)."""
        return {name: s.proc for name, s in self._services.items() if s.proc is not None}

    def start(self, only: Iterable[str] | None = None) -> None:
        """Start every service, or those named in `only`; start one again after it was killed."""
        self.logs.mkdir(parents=True, exist_ok=True)
        for name in self.commands if only is None else only:
            service = self._services.setdefault(
                name, _Service(name, self.commands[name], self.logs / f"{name}.log"))
            self._spawn(service)

    def _spawn(self, service: _Service) -> None:
        with open(service.log, "ab") as log:  # the child keeps its own copy
            service.proc = subprocess.Popen(
                service.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,  # we, not the terminal, stop them
                env=dict(self.env))
        service.started = time.monotonic()
        service.restart_at = None

    def poll(self) -> None:
        """Log the services that exited since the last call, start again those that failed and
        whose delay is over; raises GaveUp when one failed `burst` times fast."""
        now = time.monotonic()
        for service in self._services.values():
            if service.restart_at is not None:
                if now >= service.restart_at:
                    self._spawn(service)
                    self.say(f"{service.name} started again (pid {service.proc.pid})")
                continue
            if service.proc is None or (code := service.proc.poll()) is None:
                continue
            _kill_group(service.proc)
            service.proc, ran = None, now - service.started
            if code == 0:
                self.say(f"{service.name} exited ({describe(code)}) after {ran:.1f} s; "
                         "not restarted")
            else:
                self._failed(service, code, ran, now)

    def _failed(self, service: _Service, code: int, ran: float, now: float) -> None:
        service.fast_failures = service.fast_failures + 1 if ran < self.fast_seconds else 0
        if service.fast_failures >= self.burst:
            raise GaveUp(f"{service.name} failed {service.fast_failures} times in a row, each "
                         f"within {self.fast_seconds:g} s of starting (last: {describe(code)}); "
                         f"see {service.log}")
        delay = min(self.max_delay, self.first_delay * 2 ** max(0, service.fast_failures - 1))
        service.restart_at = now + delay
        self.say(f"{service.name} exited ({describe(code)}) after {ran:.1f} s; "
                 f"starting it again in {delay:g} s")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM to every running service, SIGKILL to those still there after `timeout`."""
        running = [s.proc for s in self._services.values() if s.proc is not None and s.proc.poll() is None]
        for service in self._services.values():
            service.restart_at = None
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL what is left of an exited service's process group (its leader's pid)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # nothing left
        pass
