"""Jinja2 for the web pages: the environment, and the filters that turn API values into text."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

TEMPLATES = Path(__file__).resolve().parent / "templates"
_AGES = ((365 * 86400, "year"), (30 * 86400, "month"), (7 * 86400, "week"), (86400, "day"),
         (3600, "hour"), (60, "minute"))


def duration(seconds: float | None) -> str:
    """`4:05`, `1:02:03`; empty when unknown."""
    if seconds is None:
        return ""
    total = int(round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def age(iso: str, now: float | None = None) -> str:
    """`3 days ago` for an ISO 8601 time."""
    elapsed = (now or time.time()) - datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    for seconds, unit in _AGES:
        if elapsed >= seconds:
            n = int(elapsed // seconds)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def count(n: int, unit: str) -> str:
    """`1 view`, `1.2K views`, `3.4M views`."""
    if n >= 1_000_000:
        text = f"{n / 1_000_000:.1f}".rstrip("0").rstrip(".") + "M"
    elif n >= 1_000:
        text = f"{n / 1_000:.1f}".rstrip("0").rstrip(".") + "K"
    else:
        text = str(n)
    return f"{text} {unit}{'' if n == 1 else 's'}"


def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(duration=duration, age=age, count=count)
    return env
