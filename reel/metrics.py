"""Prometheus helpers: one registry per application, served at /metrics."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

REGISTRY_KEY = web.AppKey("metrics_registry", CollectorRegistry)


def install(app: web.Application) -> CollectorRegistry:
    """Give `app` its own registry and a `GET /metrics` route; returns the registry."""
    registry = CollectorRegistry()
    app[REGISTRY_KEY] = registry

    async def metrics(request: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app.router.add_get("/metrics", metrics)
    return registry
