"""Prometheus helpers: one registry per application, served at /metrics; with sibling worker
processes (reel.workers), /metrics on any of them is the sum of all."""

from __future__ import annotations

import asyncio
import logging
import operator
from collections.abc import Callable, Mapping, Sequence

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)
RELAY_HEADER = "X-Reel-Relay"  # a sibling asks: answer this process's own metrics only

log = logging.getLogger("reel.metrics")


def install(app: web.Application, siblings: Sequence[str] = (),
            combine: Mapping[str, Callable[[float, float], float]] = {}) -> CollectorRegistry:
    """Give `app` its own registry and a `GET /metrics` route; returns the registry. `siblings`:
    the private URLs of the other worker processes, whose metrics are merged in (see `merge`)."""
    registry = CollectorRegistry()
    app[REGISTRY_KEY] = registry

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        if siblings and RELAY_HEADER not in request.headers:
            body = merge([body.decode(), *await _ask(siblings)], combine).encode()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
    return registry


async def _ask(siblings: Sequence[str]) -> list[str]:
    """The sibling workers' own metrics, of those that answer within two seconds."""
    async def one(session: aiohttp.ClientSession, url: str) -> str | None:
        try:
            async with session.get(url + "/metrics", headers={RELAY_HEADER: "1"}) as resp:
                return await resp.text() if resp.status == 200 else None
        except (aiohttp.ClientError, TimeoutError, OSError):
            log.warning("sibling worker did not answer", extra={"fields": {"peer": url}})
            return None

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        answers = await asyncio.gather(*(one(session, url) for url in siblings))
    return [answer for answer in answers if answer is not None]


def merge(texts: list[str], combine: Mapping[str, Callable[[float, float], float]] = {}) -> str:
    """Several worker processes' metrics texts as one: each family's samples are added up, unless
    `combine` names another way for it (e.g. max, for whether an upstream is up)."""
    families: dict[str, tuple[str, str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]] = {}
    for text in texts:
        for family in text_string_to_metric_families(text):
            _, _, samples = families.setdefault(family.name, (family.type, family.documentation, {}))
            how = combine.get(family.name, operator.add)
            for sample in family.samples:
                key = (sample.name, tuple(sorted(sample.labels.items())))
                samples[key] = how(samples[key], sample.value) if key in samples else sample.value
    lines = []
    for name, (kind, documentation, samples) in families.items():
        lines += [f"# HELP {name} {documentation}", f"# TYPE {name} {kind}"]
        for (sample, labels), value in samples.items():
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sample}{{{label_text}}} {value!r}" if labels else f"{sample} {value!r}")
    return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
