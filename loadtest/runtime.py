"""Wiring into Locust's events: options, the shared clock, tallies from workers, the sampler that
reads the services' /metrics, and the report written when the run ends.

Importing this module (every suite does) registers the listeners. Each Locust process gets a
`Run` as `environment.reel`; users count into `environment.reel.tally`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict
from typing import Any
from urllib.parse import urlsplit

import gevent
import requests
from locust import events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner
from prometheus_client.parser import text_string_to_metric_families

from loadtest import report
from loadtest.popularity import Catalog, Hotspot
from loadtest.tally import Tally

log = logging.getLogger("reel.loadtest")
METRICS_TIMEOUT = 2.0


@events.init_command_line_parser.add_listener
def _options(parser: Any) -> None:
    group = parser.add_argument_group("reel", "reel's users, popularity and report")
    env = os.environ.get
    group.add_argument("--catalog", default=env("REEL_LOADTEST_CATALOG", "reel-data/loadtest-catalog.json"),
                       help="catalog file written by `reel loadtest seed`")
    group.add_argument("--videos", default="", help="video ids, comma-separated (instead of --catalog)")
    group.add_argument("--control", default=env("REEL_LOADTEST_CONTROL", "http://127.0.0.1:8401"),
                       help="control URL (creators, API viewers)")
    group.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of video popularity")
    group.add_argument("--popularity-seed", type=int, default=7, help="shuffle of the catalog's ranks")
    group.add_argument("--spike-at", type=float, default=None,
                       help="celebrity: seconds before the new video is posted (default 30%% of the run)")
    group.add_argument("--hot-share", type=float, default=0.6,
                       help="celebrity: share of new views going to the new video at its peak")
    group.add_argument("--hot-half-life", type=float, default=None,
                       help="celebrity: seconds for that share to halve (default 25%% of the run)")
    group.add_argument("--surge", type=float, default=1.0,
                       help="celebrity: extra viewers at the spike, as a multiple of --users")
    group.add_argument("--steps", type=int, default=4, help="step: number of steps")
    group.add_argument("--buffer-seconds", type=float, default=30.0, help="player: buffer it fills ahead")
    group.add_argument("--link-mbps", type=float, default=8.0,
                       help="player: median simulated link throughput (each player's varies around it)")
    group.add_argument("--watch-seconds", type=float, default=0.0,
                       help="player: mean seconds watched per view (0: each video to its end)")
    group.add_argument("--entry", choices=("steer", "redirect"), default="steer",
                       help="player: ask geo for the steered master (/steer/..., as hls.js players "
                            "do) or for the 302 to an edge (/vod/..., as plain players do)")
    group.add_argument("--cmcd", choices=("query", "header", "off"), default="query",
                       help="player: how CMCD data is sent")
    group.add_argument("--live", default=env("REEL_LOADTEST_LIVE", ""),
                       help="live: stream video ids, comma-separated, the celebrity's first")
    group.add_argument("--celebrity-share", type=float, default=0.8,
                       help="live: share of viewers on the first stream (the rest: the long tail)")
    group.add_argument("--no-live-audio", action="store_true",
                       help="live: follow the video rendition only, not the audio one the master names")
    group.add_argument("--interrupt", type=float, default=0.5,
                       help="creator: probability an upload is cut and resumed")
    group.add_argument("--signed-in", type=float, default=0.3,
                       help="API viewer: share that sign up (the rest browse anonymously)")
    group.add_argument("--edge-metrics", default="",
                       help="edge URLs whose /metrics to read (default: the edges players reach)")
    group.add_argument("--origin-metrics", default="",
                       help="origin URLs whose /metrics to read (default: the edges' upstreams)")
    group.add_argument("--sample-seconds", type=float, default=2.0, help="report time-series step")
    group.add_argument("--report", default=None,
                       help="report file prefix: PREFIX_report.html/.json (default: the --csv prefix)")


def _urls(text: str) -> list[str]:
    return [u.rstrip("/") for u in text.split(",") if u.strip()]


class Run:
    """One process's share of the run: tally, catalog, clock; on the master, also the series."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.options = environment.parsed_options
        self.tally = Tally()  # since the last drain
        self.total = Tally()  # master/local: the whole run
        self.t0 = time.time()
        self.catalog: Catalog | None = None
        self.series: list[dict[str, Any]] = []
        self._last: dict[str, float] = {}
        self._sampler: gevent.Greenlet | None = None
        self.finished = False

    def elapsed(self) -> float:
        return time.time() - self.t0

    def load_catalog(self) -> None:
        try:
            self.catalog = Catalog.load(self.options.catalog, self.options.videos,
                                        exponent=self.options.zipf, seed=self.options.popularity_seed)
        except ValueError as exc:
            sys.exit(f"reel loadtest: {exc}")

    def plan(self) -> dict[str, Any]:
        """What every process must agree on, decided on the master at the start."""
        shape = self.environment.shape_class
        hotspot = shape.hotspot() if shape is not None and hasattr(shape, "hotspot") else None
        return {"t0": time.time(), "hotspot": asdict(hotspot) if hotspot else None}

    def begin(self, plan: dict[str, Any]) -> None:
        self.t0 = plan["t0"]
        if self.catalog is not None and plan.get("hotspot"):
            self.catalog.make_hot(Hotspot(**plan["hotspot"]))

    # -- master / local ----------------------------------------------------------------------

    def start_sampling(self) -> None:
        self._mark(time.time(), self._scrape())
        self._sampler = gevent.spawn(self._sample_forever)

    def _sample_forever(self) -> None:
        while True:
            gevent.sleep(self.options.sample_seconds)
            self.sample()

    def sample(self) -> None:
        now = time.time()
        window = self.tally.drain()
        self.total.merge(window)
        scraped = self._scrape()
        dt = max(1e-6, now - self._last["time"])
        stats = self.environment.stats.total
        delta = {name: value - self._last.get(name, 0.0) for name, value in scraped.items()}
        edge_requests = delta.get("edge_requests", 0.0)
        stall = window.counts["player.stalls"]
        self.series.append({
            "t": round(now - self.t0, 2),
            "users": self.environment.runner.user_count if self.environment.runner else 0,
            "rps": (stats.num_requests - self._last["requests"]) / dt,
            "failures_per_s": (stats.num_failures - self._last["failures"]) / dt,
            "hit_ratio": window.hit_ratio(),
            "ttfb_p99_playlist": window.histogram("ttfb.playlist").percentile(0.99),
            "ttfb_p99_segment": window.histogram("ttfb.segment").percentile(0.99),
            "origin_fetches_per_s": delta.get("origin_fetches", 0.0) / dt,
            "origin_fetches_per_edge_request": (delta.get("origin_fetches", 0.0) / edge_requests
                                                if edge_requests else None),
            "stalls_per_min": stall * 60.0 / dt,
            "startup_p50": window.histogram("player.startup").percentile(0.5),
            "hot_share": (window.counts["player.views.hot"] / window.counts["player.views"]
                          if window.counts["player.views"] else None),
            **_live_sample(window, delta, dt, self.environment.runner.user_count
                           if self.environment.runner else 0),
        })
        self._mark(now, scraped)

    def _mark(self, now: float, scraped: dict[str, float]) -> None:
        stats = self.environment.stats.total
        self._last = {"time": now, "requests": stats.num_requests, "failures": stats.num_failures,
                      **scraped}

    def _scrape(self) -> dict[str, float]:
        """Counters summed over the edges' and origins' /metrics."""
        out: dict[str, float] = {}
        edges = set(_urls(self.options.edge_metrics)) or (self.total.edges | self.tally.edges)
        upstreams: set[str] = set()
        for edge in sorted(edges):
            for family in _families(edge):
                for sample in family.samples:
                    if sample.name == "reel_edge_requests_total":
                        out["edge_requests"] = out.get("edge_requests", 0.0) + sample.value
                    elif sample.name == "reel_edge_upstream_fetches_total":
                        out["edge_fetches"] = out.get("edge_fetches", 0.0) + sample.value
                        upstreams.add(sample.labels.get("origin", ""))
                    elif sample.name == "reel_edge_live_upstream_requests_total" and \
                            sample.labels.get("kind") == "part":
                        out["live_part_upstream"] = out.get("live_part_upstream", 0.0) + sample.value
                    elif sample.name == "process_cpu_seconds_total":
                        out["edge_cpu"] = out.get("edge_cpu", 0.0) + sample.value
        origins = set(_urls(self.options.origin_metrics)) or {u for u in upstreams if u} - edges
        for origin in sorted(origins):
            for family in _families(origin):
                for sample in family.samples:
                    if sample.name == "reel_origin_responses_total":
                        out["origin_fetches"] = out.get("origin_fetches", 0.0) + sample.value
        if "origin_fetches" not in out and "edge_fetches" in out:
            out["origin_fetches"] = out["edge_fetches"]  # origin unreadable: the edges' view
        return out

    def finish(self) -> None:
        """Last sample, then the report (once: the quit event may fire after a SIGTERM too)."""
        if self.finished:
            return
        self.finished = True
        if self._sampler is not None:
            self._sampler.kill(block=False)
            self.sample()
        prefix = self.options.report or self.options.csv_prefix or "reel-loadtest"
        summary = report.summarize(self.total, self.series, self.environment, self.catalog)
        directory = os.path.dirname(prefix)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(f"{prefix}_report.json", "w") as f:
            json.dump({"summary": summary, "series": self.series}, f, indent=1)
        with open(f"{prefix}_report.html", "w") as f:
            f.write(report.html(summary, self.series))
        log.info("reel report: %s_report.html", prefix)


def _live_sample(window: Tally, delta: dict[str, float], dt: float, users: int) -> dict[str, Any]:
    """A live run's figures for one sample: latency from PROGRAM-DATE-TIME, upstream part
    requests per part each edge served, edge CPU per 1,000 viewers."""
    latency = window.histogram("live.latency")
    cpu = delta.get("edge_cpu", 0.0) / dt
    return {
        "live_latency_p50": latency.percentile(0.5),
        "live_latency_p99": latency.percentile(0.99),
        "live_upstream_per_part": (delta.get("live_part_upstream", 0.0) / len(window.parts)
                                   if window.parts else None),
        "live_parts": len(window.parts),
        "live_part_upstream": delta.get("live_part_upstream", 0.0),
        "edge_cpu_per_1000": cpu / users * 1000 if users and "edge_cpu" in delta else None,
    }


def _families(base: str) -> list[Any]:
    try:
        resp = requests.get(f"{base}/metrics", timeout=METRICS_TIMEOUT)
        resp.raise_for_status()
        return list(text_string_to_metric_families(resp.text))
    except (requests.RequestException, ValueError) as exc:
        log.warning("cannot read %s/metrics: %s", base, exc)
        return []


def edge_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@events.init.add_listener
def _init(environment: Environment, **_: Any) -> None:
    if environment.parsed_options is None:  # run as a library, not by `locust`
        return
    run = Run(environment)
    environment.reel = run  # type: ignore[attr-defined]
    if any(getattr(cls, "needs_catalog", False) for cls in environment.user_classes):
        run.load_catalog()
    runner = environment.runner
    if isinstance(runner, WorkerRunner):
        runner.register_message("reel_begin", lambda environment, msg, **_: run.begin(msg.data))

        @environment.events.report_to_master.add_listener
        def _report(client_id: str, data: dict[str, Any]) -> None:
            data["reel"] = run.tally.drain().to_message()
        return

    @environment.events.test_start.add_listener
    def _start(environment: Environment, **_: Any) -> None:
        plan = run.plan()
        run.begin(plan)
        if isinstance(runner, MasterRunner):
            runner.send_message("reel_begin", plan)
        run.start_sampling()

    if isinstance(runner, MasterRunner):
        @environment.events.worker_report.add_listener
        def _worker(client_id: str, data: dict[str, Any]) -> None:
            if "reel" in data:
                run.tally.merge(Tally.from_message(data["reel"]))

    environment.events.quit.add_listener(lambda **_: run.finish())
