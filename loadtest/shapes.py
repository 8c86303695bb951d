"""Load shapes. Each reads Locust's common options: --users N is the base population, --run-time T
the length (default 60 s), --spawn-rate how fast users come (default: all within 5 s or less)."""

from __future__ import annotations

import math

from locust import LoadTestShape

from loadtest.popularity import Hotspot


class ReelShape(LoadTestShape):
    abstract = True
    use_common_options = True

    @property
    def users(self) -> int:
        return max(1, int(self.runner.environment.parsed_options.num_users or 10))

    @property
    def duration(self) -> float:
        return float(self.runner.environment.parsed_options.run_time or 60)

    @property
    def rate(self) -> float:
        given = self.runner.environment.parsed_options.spawn_rate
        return float(given) if given else max(1.0, self.users / min(5.0, self.duration / 10))

    def users_at(self, t: float) -> tuple[int, float]:
        raise NotImplementedError

    def tick(self) -> tuple[int, float] | None:
        t = self.get_run_time()
        if t >= self.duration:
            return None
        return self.users_at(t)


class Steady(ReelShape):
    """--users viewers for the whole run (Zipf popularity does the rest)."""

    def users_at(self, t: float) -> tuple[int, float]:
        return self.users, self.rate


class Celebrity(ReelShape):
    """Steady traffic; at --spike-at a new video is posted: --surge x --users more viewers arrive
    within seconds and --hot-share of all new views go to it, both decaying with --hot-half-life."""

    def hotspot(self) -> Hotspot:
        options = self.runner.environment.parsed_options
        at = options.spike_at if options.spike_at is not None else 0.3 * self.duration
        half_life = options.hot_half_life or 0.25 * self.duration
        return Hotspot(at=at, share=options.hot_share, rise=min(2.0, half_life), half_life=half_life)

    def users_at(self, t: float) -> tuple[int, float]:
        hot = self.hotspot()
        surge = self.runner.environment.parsed_options.surge * self.users
        if t < hot.at or surge <= 0:
            return self.users, self.rate
        extra = surge * 0.5 ** ((t - hot.at) / hot.half_life)
        return self.users + round(extra), max(self.rate, surge / hot.rise)


class Step(ReelShape):
    """--users / --steps more viewers every run-time / --steps: where does it saturate?"""

    def users_at(self, t: float) -> tuple[int, float]:
        steps = max(1, self.runner.environment.parsed_options.steps)
        step = min(steps, int(t / (self.duration / steps)) + 1)
        return max(1, math.ceil(self.users * step / steps)), self.rate


class Surge(ReelShape):
    """A tenth of --users until 30% of the run, then ten times that within 10 s: a celebrity
    goes live and the notification lands (the step the live suite is judged on)."""

    def users_at(self, t: float) -> tuple[int, float]:
        base = max(1, self.users // 10)
        at = 0.3 * self.duration
        if t < at:
            return base, self.rate
        return self.users, max(self.rate, (self.users - base) / 10.0)


class Waves(ReelShape):
    """Two waves up to --users with a trough between: does it recover, and hold a second time?"""

    def users_at(self, t: float) -> tuple[int, float]:
        phase = (t / self.duration) * 2 * math.pi * 2  # two full waves over the run
        level = 0.1 + 0.9 * (1 - math.cos(phase)) / 2
        return max(1, round(self.users * level)), max(self.rate, self.users / 2)
