"""The run's summary and its HTML page: headline numbers first, then one small time-series plot
per question an SRE asks (load, throughput, cache, TTFB, origin, stalls).

Plots are inline SVG made here: the page is one self-contained file that opens anywhere, with no
plotting library to install on every load generator.
"""

from __future__ import annotations

import html as _html
from typing import Any

from locust.env import Environment

from loadtest.popularity import Catalog
from loadtest.tally import Tally


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summarize(total: Tally, series: list[dict[str, Any]], environment: Environment,
              catalog: Catalog | None) -> dict[str, Any]:
    stats = environment.stats.total
    seconds = series[-1]["t"] if series else 0.0
    counts = total.counts
    startup = total.histogram("player.startup")
    fetches = [p["origin_fetches_per_s"] for p in series]
    return {
        "duration_s": round(seconds, 1),
        "requests": stats.num_requests,
        "failures": stats.num_failures,
        "rps": round(stats.num_requests / seconds, 1) if seconds else 0.0,
        "peak_users": max((p["users"] for p in series), default=0),
        "hit_ratio": total.hit_ratio(),
        "x_cache": {k.split(".", 1)[1]: v for k, v in counts.items() if k.startswith("cache.")},
        "origin_fetches_per_s_peak": max(fetches, default=0.0),
        "origin_fetches_per_edge_request": _offload(series),
        "views": counts["player.views"],
        "views_failed": counts["player.views.failed"],
        "hot_views": counts["player.views.hot"],
        "startup_p50_ms": _ms(startup.percentile(0.5)),
        "startup_p99_ms": _ms(startup.percentile(0.99)),
        "stalls": counts["player.stalls"],
        "stalls_per_min": round(counts["player.stalls"] * 60 / seconds, 2) if seconds else 0.0,
        "stall_p50_ms": _ms(total.histogram("player.stall").percentile(0.5)),
        "switches_up": counts["player.switch.up"],
        "switches_down": counts["player.switch.down"],
        "ttfb_p99_ms": {kind: _ms(total.histogram(f"ttfb.{kind}").percentile(0.99))
                        for kind in ("playlist", "segment", "geo")},
        "uploads": counts["creator.uploads"],
        "uploads_interrupted": counts["creator.interrupted"],
        "uploads_completed": counts["creator.completed"],
        "uploads_resumed_bytes": counts["creator.resumed_bytes"],
        "throttled": counts["api.throttled"],
        # API viewers signed in with a seeded session, and those that had to sign up in the run
        "viewers_seeded": counts["api.viewers.seeded"],
        "viewers_signed_up": counts["api.viewers.signed_up"],
        "edges": sorted(total.edges),
        **_live(total, series),
        "catalog": catalog.describe() if catalog else None,
    }


def _live(total: Tally, series: list[dict[str, Any]]) -> dict[str, Any]:
    """A live run's headline figures (None for a VOD run)."""
    latency = total.histogram("live.latency")
    # Over the whole run: a part fetched ahead in one sample is often served in the next.
    parts = sum(p.get("live_parts", 0) for p in series)
    upstream = sum(p.get("live_part_upstream", 0.0) for p in series)
    cpu = [p["edge_cpu_per_1000"] for p in series if p.get("edge_cpu_per_1000") is not None]
    return {
        "live_latency_p50_ms": _ms(latency.percentile(0.5)),
        "live_latency_p99_ms": _ms(latency.percentile(0.99)),
        "live_parts_served": len(total.parts),  # distinct parts per edge, audio's and video's
        "live_audio_parts": total.counts["live.audio_parts"],  # audio parts fetched
        "live_upstream_per_part": round(upstream / parts, 3) if parts else None,
        "edge_cpu_per_1000": round(sum(cpu) / len(cpu), 3) if cpu else None,
        "rendition_reports_used": total.counts["live.rendition_report"],
    }


def _offload(series: list[dict[str, Any]]) -> float | None:
    values = [p["origin_fetches_per_edge_request"] for p in series
              if p["origin_fetches_per_edge_request"] is not None]
    return round(sum(values) / len(values), 4) if values else None


PLOTS = (
    ("Users", [("users", "users", "#4c78a8")], ""),
    ("Requests/s", [("rps", "requests", "#4c78a8"), ("failures_per_s", "failures", "#e45756")], ""),
    ("Edge hit ratio (X-Cache)", [("hit_ratio", "hit ratio", "#54a24b")], "ratio"),
    ("TTFB p99", [("ttfb_p99_playlist", "playlist", "#f58518"),
                  ("ttfb_p99_segment", "segment", "#b279a2")], "ms"),
    ("Origin fetches/s", [("origin_fetches_per_s", "origin fetches", "#e45756")], ""),
    ("Stalls per minute", [("stalls_per_min", "stalls/min", "#e45756")], ""),
    ("Startup p50", [("startup_p50", "startup", "#72b7b2")], "ms"),
    ("Share of views on the hot video", [("hot_share", "hot share", "#eeca3b")], "ratio"),
)
LIVE_PLOTS = (
    ("Live latency (PDT vs wall clock)", [("live_latency_p50", "p50", "#4c78a8"),
                                          ("live_latency_p99", "p99", "#e45756")], "ms"),
    ("Upstream requests per part per edge", [("live_upstream_per_part", "per part", "#f58518")], ""),
    ("Edge CPU per 1,000 viewers", [("edge_cpu_per_1000", "CPU s/s", "#b279a2")], ""),
)


def _value(point: dict[str, Any], key: str, unit: str) -> float | None:
    value = point.get(key)
    if value is None:
        return None
    return value * 1000 if unit == "ms" else value


def svg_plot(title: str, lines: list[tuple[str, str, str]], unit: str,
             series: list[dict[str, Any]], width: int = 460, height: int = 190) -> str:
    left, right, top, bottom = 48, 10, 40, 26
    xs = [p["t"] for p in series] or [0.0]
    values = [v for p in series for key, _, _ in lines if (v := _value(p, key, unit)) is not None]
    y_max = 1.0 if unit == "ratio" else max(values, default=0.0) * 1.1 or 1.0
    x_max = max(xs) or 1.0

    def x(t: float) -> float:
        return left + (width - left - right) * t / x_max

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / y_max)

    out = [f'<svg class="plot" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
           f'role="img" aria-label="{_html.escape(title)}">',
           f'<text x="{left}" y="16" class="title">{_html.escape(title)}'
           f'{" (" + unit + ")" if unit and unit != "ratio" else ""}</text>']
    for i in range(5):
        v = y_max * i / 4
        out.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
                   f'class="grid"/><text x="{left - 4}" y="{y(v) + 4:.1f}" class="tick" '
                   f'text-anchor="end">{_fmt(v)}</text>')
    out.append(f'<text x="{width - right}" y="{height - 6}" class="tick" text-anchor="end">'
               f'{x_max:.0f} s</text><text x="{left}" y="{height - 6}" class="tick">0 s</text>')
    legend_x = width - right - sum(20 + 6 * len(label) for _, label, _ in lines)
    for key, label, color in lines:
        points, path = [(p["t"], _value(p, key, unit)) for p in series], []
        for t, v in points:
            if v is None:
                continue
            path.append(f"{'M' if not path else 'L'}{x(t):.1f},{y(v):.1f}")
        if path:
            out.append(f'<path d="{" ".join(path)}" stroke="{color}" class="line"/>')
        out.append(f'<rect x="{legend_x}" y="22" width="10" height="10" fill="{color}"/>'
                   f'<text x="{legend_x + 14}" y="31" class="tick">{_html.escape(label)}</text>')
        legend_x += 20 + 6 * len(label)
    out.append("</svg>")
    return "".join(out)


def _fmt(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.0f}"


def _tile(label: str, value: Any, unit: str = "", bad: bool = False) -> str:
    if isinstance(value, float):
        value = round(value) if unit.strip() == "ms" else round(value, 2)
    shown = "–" if value is None else str(value)
    return (f'<div class="tile{" bad" if bad else ""}"><div class="v">{_html.escape(shown)}'
            f'<small>{unit}</small></div><div class="k">{_html.escape(label)}</div></div>')


def html(summary: dict[str, Any], series: list[dict[str, Any]]) -> str:
    s = summary
    ttfb = s["ttfb_p99_ms"]
    tiles = "".join([
        _tile("requests/s", s["rps"]),
        _tile("failures", s["failures"], bad=s["failures"] > 0),
        _tile("edge hit ratio", s["hit_ratio"]),
        _tile("origin fetches / edge request", s["origin_fetches_per_edge_request"]),
        _tile("startup p50", s["startup_p50_ms"], " ms"),
        _tile("startup p99", s["startup_p99_ms"], " ms"),
        _tile("stalls / min", s["stalls_per_min"], bad=s["stalls_per_min"] > 1),
        _tile("TTFB p99 playlist", ttfb["playlist"], " ms"),
        _tile("TTFB p99 segment", ttfb["segment"], " ms"),
        _tile("views", s["views"]),
        _tile("switches up/down", f"{s['switches_up']}/{s['switches_down']}"),
        _tile("uploads (cut)", f"{s['uploads_completed']} ({s['uploads_interrupted']})"),
    ])
    plotted = PLOTS
    if s.get("live_parts_served"):
        tiles += "".join([
            _tile("live latency p50", s["live_latency_p50_ms"], " ms"),
            _tile("live latency p99", s["live_latency_p99_ms"], " ms"),
            _tile("upstream requests / part / edge", s["live_upstream_per_part"],
                  bad=(s["live_upstream_per_part"] or 0) > 1.5),
            _tile("edge CPU s/s per 1,000 viewers", s["edge_cpu_per_1000"]),
        ])
        plotted = PLOTS + LIVE_PLOTS
    plots = "".join(svg_plot(title, list(lines), unit, series) for title, lines, unit in plotted)
    details = _html.escape(str({k: v for k, v in s.items() if k in ("x_cache", "catalog", "edges")}))
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>reel load test</title>
<style>
body{{font-family:system-ui,sans-serif;margin:1.5em;color:#222}}
.tiles{{display:flex;flex-wrap:wrap;gap:.6em;margin-bottom:1em}}
.tile{{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:8.5em}}
.tile .v{{font-size:1.5em;font-weight:600}} .tile .k{{color:#666;font-size:.85em}}
.tile.bad{{border-color:#e45756;background:#fdecec}}
.plot{{border:1px solid #eee;margin:.3em}} .title{{font-size:13px;font-weight:600}}
.tick{{font-size:10px;fill:#666}} .grid{{stroke:#eee}} .line{{fill:none;stroke-width:2}}
</style></head><body>
<h1>reel load test: {s["duration_s"]} s, peak {s["peak_users"]} users, {s["requests"]} requests</h1>
<div class="tiles">{tiles}</div>
<div>{plots}</div>
<p><small>{details}</small></p>
</body></html>
"""
