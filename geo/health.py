"""Active health checks of every edge, with hysteresis so one lost probe does not flap routing.

An edge starts healthy (so the first requests after startup are served), goes down after `fall`
consecutive failed probes and comes back after `rise` consecutive good ones.

A good probe's JSON body may report the edge's load (`{"load": {"connections": N}}`: client
connections open on it); `load(edge)` is that plus the clients geo sent there since, so a burst
of new players between two probes does not all land on the edge that was least loaded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from reel.http import read_at_most
from reel.logs import fields

log = logging.getLogger("geo.health")

OnChange = Callable[[str, bool], None]
MAX_HEALTH_BODY = 64 * 1024  # a larger /healthz body is not read for its load


@dataclass
class EdgeState:
    healthy: bool = True
    failures: int = 0  # consecutive
    successes: int = 0  # consecutive
    last_error: str | None = None
    changed_at: float = field(default_factory=time.monotonic)
    reported_load: int = 0  # client connections, as of the last good probe (0: not reported)
    assigned: int = 0  # clients geo sent to it since that probe


class HealthChecker:
    """Probes `GET {edge}/healthz` for every edge; `is_healthy(edge)` is the current verdict."""

    def __init__(
        self,
        edges: Iterable[str],
        *,
        interval: float = 2.0,
        timeout: float = 1.0,
        fall: int = 2,
        rise: int = 2,
        path: str = "/healthz",
        on_change: OnChange | None = None,
    ) -> None:
        if interval <= 0 or timeout <= 0:
            raise ValueError("probe interval and timeout must be positive")
        if fall < 1 or rise < 1:
            raise ValueError("fall and rise must be at least 1")
        self.states = {edge: EdgeState() for edge in edges}
        self.interval = interval
        self.timeout = timeout
        self.fall = fall
        self.rise = rise
        self.path = path
        self.on_change = on_change
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return bool(self._tasks)

    def is_healthy(self, edge: str) -> bool:
        state = self.states.get(edge)
        return state is not None and state.healthy

    def load(self, edge: str) -> float:
        state = self.states.get(edge)
        return 0.0 if state is None else float(state.reported_load + state.assigned)

    def assign(self, edge: str) -> None:
        """Count a client sent to `edge`, until the next probe reports its load afresh."""
        if (state := self.states.get(edge)) is not None:
            state.assigned += 1

    def report_load(self, edge: str, body: bytes) -> None:
        """Take the load from a good probe's body; an edge that reports none counts as idle."""
        load = 0
        try:
            value = json.loads(body)["load"]["connections"]
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                load = value
        except (ValueError, KeyError, TypeError):
            pass
        state = self.states[edge]
        state.reported_load, state.assigned = load, 0

    def record(self, edge: str, ok: bool, error: str | None = None) -> bool:
        """Count one probe result; returns True when it changed the edge's verdict."""
        state = self.states[edge]
        if ok:
            state.failures = 0
            state.successes += 1
            flip = not state.healthy and state.successes >= self.rise
        else:
            state.successes = 0
            state.failures += 1
            state.last_error = error
            flip = state.healthy and state.failures >= self.fall
        if flip:
            state.healthy = not state.healthy
            state.changed_at = time.monotonic()
            if self.on_change is not None:
                self.on_change(edge, state.healthy)
        return flip

    async def start(self) -> None:
        if self._tasks:
            return
        # One session, shared by all probes; no proxies from the environment on loopback/LAN.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "reel-geo-health"},
        )
        # One loop per edge, so a slow edge never delays the verdict on another.
        self._tasks = [asyncio.create_task(self._run(edge), name=f"geo-health {edge}")
                       for edge in self.states]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def probe(self, edge: str) -> str | None:
        """One probe of `edge`: None when healthy, else what went wrong."""
        assert self._session is not None, "start() first"
        try:
            async with self._session.get(edge + self.path, allow_redirects=False) as resp:
                # Read (bounded), so the connection goes back to the pool.
                body = await read_at_most(resp, MAX_HEALTH_BODY)
                if resp.status != 200:
                    return f"HTTP {resp.status}"
                self.report_load(edge, body or b"")
                return None
        except TimeoutError:
            return f"timeout after {self.timeout:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _run(self, edge: str) -> None:
        while True:
            started = time.monotonic()
            try:
                error = await self.probe(edge)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug in a probe must not stop the checks for good
                log.exception("health probe crashed", extra=fields(edge=edge))
                error = f"probe crashed: {exc!r}"
            self.record(edge, error is None, error)
            # Jitter, so many geo instances drift apart instead of probing in lockstep.
            delay = self.interval * random.uniform(0.9, 1.1) - (time.monotonic() - started)
            await asyncio.sleep(max(0.0, delay))
