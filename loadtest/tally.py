"""What the users measure beyond Locust's request stats, kept apart so no request is counted twice.

Each Locust process keeps one `Tally`. Workers drain theirs into every report to the master
(`report_to_master`), the master merges them (`worker_report`); a local run reads its own.
Histograms have fixed log-spaced buckets, so merging is adding and percentiles need no samples.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

_RATIO = 1.05  # bucket width: percentiles are within 5 %
_FLOOR = 1e-4  # seconds


class Histogram:
    """Counts of values (seconds) in buckets [FLOOR*RATIO^i, FLOOR*RATIO^(i+1))."""

    def __init__(self, buckets: dict[int, int] | None = None) -> None:
        self.buckets: Counter[int] = Counter(buckets or {})

    def add(self, seconds: float) -> None:
        index = 0 if seconds <= _FLOOR else int(math.log(seconds / _FLOOR, _RATIO)) + 1
        self.buckets[index] += 1

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)

    def percentile(self, q: float) -> float | None:
        """The q-quantile (0..1), as the upper bound of its bucket; None when empty."""
        total = self.count
        if not total:
            return None
        rank, seen = q * total, 0
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return _FLOOR * _RATIO**index
        return _FLOOR * _RATIO ** max(self.buckets)


class Tally:
    """Counters and histograms of one process (or, on the master, of all)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.histograms: dict[str, Histogram] = {}
        self.edges: set[str] = set()
        self.parts: set[str] = set()  # "EDGE PATH" of the live parts viewers got, per edge

    def count(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def observe(self, name: str, seconds: float) -> None:
        self.histograms.setdefault(name, Histogram()).add(seconds)

    def histogram(self, name: str) -> Histogram:
        return self.histograms.get(name) or Histogram()

    def merge(self, other: Tally) -> None:
        self.counts.update(other.counts)
        for name, histogram in other.histograms.items():
            self.histograms.setdefault(name, Histogram()).merge(histogram)
        self.edges |= other.edges
        self.parts |= other.parts

    def drain(self) -> Tally:
        """Everything counted so far, leaving this tally empty."""
        drained = Tally()
        drained.counts, drained.histograms, drained.edges = self.counts, self.histograms, self.edges
        drained.parts = self.parts
        self.counts, self.histograms, self.edges, self.parts = Counter(), {}, set(), set()
        return drained

    def to_message(self) -> dict[str, Any]:
        return {"counts": dict(self.counts), "edges": sorted(self.edges), "parts": sorted(self.parts),
                "histograms": {n: dict(h.buckets) for n, h in self.histograms.items()}}

    @classmethod
    def from_message(cls, data: dict[str, Any]) -> Tally:
        tally = cls()
        tally.counts.update(data.get("counts", {}))
        tally.edges.update(data.get("edges", ()))
        tally.parts.update(data.get("parts", ()))
        for name, buckets in data.get("histograms", {}).items():
            # msgpack keeps int keys; JSON would have made them strings
            tally.histograms[name] = Histogram({int(k): v for k, v in buckets.items()})
        return tally

    # -- what the report shows -------------------------------------------------------------------

    def hit_ratio(self) -> float | None:
        """Edge responses that made no origin fetch (HIT, STALE, COALESCED) over all of them."""
        total = sum(self.counts[f"cache.{r}"] for r in ("HIT", "MISS", "STALE", "COALESCED"))
        if not total:
            return None
        return sum(self.counts[f"cache.{r}"] for r in ("HIT", "STALE", "COALESCED")) / total
