"""The edge's metrics: plain counters on the request path, turned into Prometheus at scrape time.

prometheus_client's Counter and Histogram take a lock and walk their buckets on every call, a few
microseconds a request; a cache hit costs about as much. So the request path adds to ints and a
bucket list here, and a collector on the app's own registry reports them when /metrics is read.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

from edge.http import XCache
from reel import metrics

RESULTS = tuple(XCache)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _Latency:
    __slots__ = ("counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.total = 0.0


class Stats:
    """Counters for one edge process; `gauges` are read when scraped."""

    def __init__(
        self, registry: CollectorRegistry, gauges: dict[str, tuple[str, Callable[[], float]]]
    ) -> None:
        self.requests = dict.fromkeys(RESULTS, 0)
        self.latency = {result: _Latency() for result in RESULTS}
        self.upstream_latency = _Latency()  # request sent upstream -> response head back
        self.lag = _Latency()  # a fetch's last byte in -> a waiter's last byte handed to its socket
        self.bytes_sent = 0
        self.evictions = 0
        self.purged = 0
        self.prefetches = 0
        self.prefetch_hits = 0
        self.live_prefetches = 0
        self.refused_waiters = 0
        # Upstream requests for live objects, by kind: what "one upstream request per part per
        # rendition" is measured with (divided by the parts the stream made).
        self.live_upstream: defaultdict[str, int] = defaultdict(int)
        self.upstream_fetches: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.upstream_errors: defaultdict[str, int] = defaultdict(int)
        self.fetch_ends: defaultdict[str, int] = defaultdict(int)  # by FetchEnd's value
        self.upstream_up: dict[str, Callable[[], bool]] = {}
        # Client connections the edge gave up on, by what they were doing: sending a request
        # head (head), nothing (idle), not reading a response (send), waiting on an upstream (wait).
        self.timeouts = dict.fromkeys(("head", "idle", "send", "wait"), 0)
        self._gauges = gauges
        registry.register(self)

    def served(self, result: XCache, seconds: float, sent: int) -> None:
        """One object request answered: its X-Cache, time to its last byte, body bytes sent."""
        self.requests[result] += 1
        latency = self.latency[result]
        latency.counts[bisect_left(BUCKETS, seconds)] += 1
        latency.total += seconds
        self.bytes_sent += sent

    def fetched(self, origin: str, status: int) -> None:
        self.upstream_fetches[(origin, str(status))] += 1

    def upstream_asked(self, key: str) -> None:
        if key.startswith("live/"):
            self.live_upstream[live_kind(key)] += 1

    def waiter_lag(self, seconds: float) -> None:
        self.lag.counts[bisect_left(BUCKETS, seconds)] += 1
        self.lag.total += seconds

    def upstream_head(self, seconds: float) -> None:
        self.upstream_latency.counts[bisect_left(BUCKETS, seconds)] += 1
        self.upstream_latency.total += seconds

    def upstream_failed(self, origin: str) -> None:
        self.upstream_errors[origin] += 1

    def fetch_ended(self, outcome: str) -> None:
        self.fetch_ends[outcome] += 1

    def collect(self) -> Iterator[object]:
        requests = CounterMetricFamily("reel_edge_requests", "Object requests by cache result",
                                       labels=["cache"])
        for result, count in self.requests.items():
            requests.add_metric([result], count)
        yield requests
        seconds = HistogramMetricFamily(
            "reel_edge_request_seconds", "Time from request to last body byte, by cache result",
            labels=["cache"],
        )
        for result, latency in self.latency.items():
            seconds.add_metric([result], _buckets(latency), latency.total)
        yield seconds
        upstream = HistogramMetricFamily(
            "reel_edge_upstream_seconds", "Time from asking upstream to its response head (misses)"
        )
        upstream.add_metric([], _buckets(self.upstream_latency), self.upstream_latency.total)
        yield upstream
        lag = HistogramMetricFamily(
            "reel_edge_waiter_lag_seconds",
            "From an upstream fetch's last byte arriving to a waiter's last byte handed to its socket",
        )
        lag.add_metric([], _buckets(self.lag), self.lag.total)
        yield lag
        fetches = CounterMetricFamily(
            "reel_edge_upstream_fetches", "Upstream responses by upstream and status",
            labels=["origin", "status"],
        )
        for (origin, status), count in self.upstream_fetches.items():
            fetches.add_metric([origin, status], count)
        yield fetches
        errors = CounterMetricFamily(
            "reel_edge_upstream_errors", "Upstream connect errors, timeouts, 5xx and broken bodies",
            labels=["origin"],
        )
        for origin, count in self.upstream_errors.items():
            errors.add_metric([origin], count)
        yield errors
        ends = CounterMetricFamily("reel_edge_fetches", "Upstream fetches ended, by how they ended",
                                   labels=["outcome"])
        for outcome, count in self.fetch_ends.items():
            ends.add_metric([outcome], count)
        yield ends
        live = CounterMetricFamily(
            "reel_edge_live_upstream_requests",
            "Upstream requests for live objects, by kind (part, blocking_playlist, playlist, ...)",
            labels=["kind"])
        for kind, count in self.live_upstream.items():
            live.add_metric([kind], count)
        yield live
        up = GaugeMetricFamily("reel_edge_upstream_up", "1 while an upstream is considered healthy",
                               labels=["origin"])
        for origin, healthy in self.upstream_up.items():
            up.add_metric([origin], 1.0 if healthy() else 0.0)
        yield up
        timeouts = CounterMetricFamily("reel_edge_client_timeouts", "Client connections timed out, by phase",
                                       labels=["phase"])
        for phase, count in self.timeouts.items():
            timeouts.add_metric([phase], count)
        yield timeouts
        for name, help_text, value in (
            ("reel_edge_bytes_sent", "Body bytes sent to clients", self.bytes_sent),
            ("reel_edge_evictions", "Objects evicted to stay under the byte bound", self.evictions),
            ("reel_edge_purged_objects", "Cached or in-flight objects purged", self.purged),
            ("reel_edge_prefetches", "Segments fetched ahead of the viewer", self.prefetches),
            ("reel_edge_prefetch_hits", "Requests answered by a prefetch", self.prefetch_hits),
            ("reel_edge_live_prefetches", "Live blocking reloads and hinted parts asked for ahead of viewers",
             self.live_prefetches),
            ("reel_edge_waiters_refused", "Requests refused (503) because too many already wait on fetches",
             self.refused_waiters),
        ):
            yield CounterMetricFamily(name, help_text, value=value)
        for name, (help_text, read) in self._gauges.items():
            yield GaugeMetricFamily(name, help_text, value=read())


def _buckets(latency: _Latency) -> list[tuple[str, int]]:
    cumulative, buckets = 0, []
    for bound, count in zip((*BUCKETS, float("inf")), latency.counts, strict=True):
        cumulative += count
        buckets.append((_bound(bound), cumulative))
    return buckets


def _bound(value: float) -> str:
    return "+Inf" if value == float("inf") else repr(float(value))


# How one family's samples from several workers make one: by what the family means. Counters,
# histograms and bytes add up, as do sizes (each worker has its own cache); whether an upstream
# is up is one fact about that upstream, so it is up when any worker finds it so.
_COMBINE: dict[str, Callable[[float, float], float]] = {"reel_edge_upstream_up": max,
                                                        "process_start_time_seconds": min}


def merge(texts: list[str]) -> str:
    """Several worker processes' /metrics as one, each family merged by its meaning (_COMBINE;
    anything else adds up)."""
    return metrics.merge(texts, _COMBINE)


def live_kind(key: str) -> str:
    """What a live key names, for counting: part, blocking_playlist, playlist, master, init, segment."""
    path, _, query = key.partition("?")
    name = path.rsplit("/", 1)[-1]
    if name == "master.m3u8":
        return "master"
    if name.endswith(".m3u8"):
        return "blocking_playlist" if query else "playlist"
    if name.startswith("part_"):
        return "part"
    return "init" if name.endswith(".mp4") else "segment"
