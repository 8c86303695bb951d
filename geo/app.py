"""The geo HTTP app: 302 each player to the nearest healthy edge, plus /healthz and /metrics."""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from urllib.parse import quote

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from geo.health import HealthChecker
from geo.locate import Locator, TrustedProxies, client_address
from geo.regions import RegionMap, load_regions
from geo.router import NoHealthyEdge, Router
from reel import metrics
from reel.http import problem
from reel.logs import fields

log = logging.getLogger("geo")

# What may be steered: vod/ or live/ and then plain segments (the object layout's alphabet).
# Checked on the raw path, so %2e%2e, %2f, %5c, %00 and friends never match; and a segment
# cannot start with a dot, so neither can `..`.
_STEERABLE = re.compile(r"/(?:vod|live)(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)+")
_MAX_PATH = 512
# Characters a query string may keep as they are; anything else (spaces, non-ASCII) is escaped
# so the Location header is always valid.
_QUERY_SAFE = "!$&'()*+,/:;=?@-._~%"
_EXPOSED = "Location, Retry-After, X-Reel-Region"


class Geo:
    """Everything one geo app owns: the region map, locator, router, health checks, metrics."""

    def __init__(
        self,
        regions: RegionMap,
        locator: Locator,
        trusted: TrustedProxies,
        registry: CollectorRegistry,
        *,
        probe_interval: float,
        probe_timeout: float,
        fall: int,
        rise: int,
    ) -> None:
        self.regions = regions
        self.locator = locator
        self.trusted = trusted
        self.router = Router(regions)
        self.region_of = {edge: r.name for r in regions.values() for edge in r.edges}
        self.health = HealthChecker(regions.edges, interval=probe_interval,
                                    timeout=probe_timeout, fall=fall, rise=rise,
                                    on_change=self._edge_changed)
        # Worst case before an edge can come back, so clients do not retry in vain before that.
        self.retry_after = str(max(1, math.ceil(probe_interval * rise)))

        self.redirects = Counter("reel_geo_redirects_total",
                                 "Players redirected, by the region of the chosen edge",
                                 ["region"], registry=registry)
        self.unknown_clients = Counter("reel_geo_unknown_clients_total",
                                       "Requests from clients we could not place "
                                       "(routed from the default region)", registry=registry)
        self.edge_healthy = Gauge("reel_geo_edge_healthy",
                                  "1 while the edge passes its health checks, else 0",
                                  ["edge"], registry=registry)
        self.no_healthy_edge = Counter("reel_geo_no_healthy_edge_total",
                                       "Requests answered 503 because no edge was healthy",
                                       registry=registry)
        for name in regions:
            self.redirects.labels(name)  # export zeros, so rates work from the start
        for edge in regions.edges:
            self.edge_healthy.labels(edge).set(1)

    async def lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        """cleanup_ctx: open the database and start probing; undo both on cleanup."""
        self.locator.open()
        if self.locator.db_path is None:
            log.warning("no GeoIP database: every client goes to the default region",
                        extra=fields(default=self.regions.default))
        await self.health.start()
        yield
        await self.health.stop()
        self.locator.close()

    def _edge_changed(self, edge: str, healthy: bool) -> None:
        self.edge_healthy.labels(edge).set(1 if healthy else 0)
        state = self.health.states[edge]
        log.log(logging.INFO if healthy else logging.WARNING,
                "edge up" if healthy else "edge down",
                extra=fields(edge=edge, region=self.region_of[edge],
                             error=None if healthy else state.last_error))

    async def steer(self, request: web.Request) -> web.Response:
        url = request.rel_url
        path = url.raw_path
        if len(path) > _MAX_PATH or not _STEERABLE.fullmatch(path):
            return problem(404, "Not Found", detail="not a vod/ or live/ path")
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={
                "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
                "Access-Control-Allow-Headers":
                    request.headers.get("Access-Control-Request-Headers", "Range"),
                "Access-Control-Max-Age": "86400",
                "Vary": "Access-Control-Request-Headers",
            })

        address = client_address(request.remote,
                                 request.headers.getall("X-Forwarded-For", ()), self.trusted)
        location = self.locator.locate(address)
        if location is None:
            self.unknown_clients.inc()
        try:
            route = self.router.route(location, self.health.is_healthy)
        except NoHealthyEdge:
            self.no_healthy_edge.inc()
            return problem(503, "No healthy edge",
                           detail="no edge in any region is passing health checks; retry shortly",
                           headers={"Retry-After": self.retry_after})
        self.redirects.labels(route.region).inc()
        target = route.edge + path
        if url.raw_query_string:
            target += "?" + quote(url.raw_query_string, safe=_QUERY_SAFE)
        return web.Response(status=302, headers={
            "Location": target,
            "Cache-Control": "no-store",  # the answer depends on who asks and on edge health
            "X-Reel-Region": route.region,
        })

    async def healthz(self, request: web.Request) -> web.Response:
        regions = {
            region.name: {
                "edges": len(region.edges),
                "healthy_edges": sum(map(self.health.is_healthy, region.edges)),
            }
            for region in self.regions.values()
        }
        serving = any(r["healthy_edges"] for r in regions.values())
        # 503 when no edge is up, so a balancer in front of several geos prefers one that can
        # still reach edges.
        return web.json_response({"status": "ok" if serving else "unavailable",
                                  "regions": regions},
                                 status=200 if serving else 503,
                                 headers={"Cache-Control": "no-store"})


GEO_KEY = web.AppKey("geo", Geo)


@web.middleware
async def _errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Every error as problem+json; never a traceback to a client."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return problem(exc.status, exc.reason, detail=exc.text or exc.reason, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled error", extra=fields(method=request.method, path=request.path))
        return problem(500, "Internal Server Error", detail="the geo service hit an unexpected error")


async def _cors(request: web.Request, response: web.StreamResponse) -> None:
    # Browser players read redirects and errors cross-origin; nothing here needs credentials.
    response.headers.setdefault("Access-Control-Allow-Origin", "*")
    response.headers.setdefault("Access-Control-Expose-Headers", _EXPOSED)


def make_app(
    regions_file: Path | str | RegionMap,
    geoip_db: Path | str | None = None,
    trusted_proxies: Iterable[str] = (),
    *,
    probe_interval: float = 2.0,
    probe_timeout: float = 1.0,
    fall: int = 2,
    rise: int = 2,
) -> web.Application:
    """Build the geo app. Raises ConfigError (RegionsError for the regions file) before serving.

    `regions_file` may also be an already-loaded RegionMap. Edges are probed every
    `probe_interval` s (each probe limited to `probe_timeout` s); an edge goes down after `fall`
    consecutive failures and comes back after `rise` consecutive successes.
    """
    regions = regions_file if isinstance(regions_file, RegionMap) else load_regions(regions_file)
    trusted = TrustedProxies(trusted_proxies)
    if geoip_db is not None:
        Locator.check(geoip_db)  # fail now, with a clear message, rather than at startup

    app = web.Application(middlewares=[_errors])
    registry = metrics.install(app)
    geo = Geo(regions, Locator(geoip_db), trusted, registry, probe_interval=probe_interval,
              probe_timeout=probe_timeout, fall=fall, rise=rise)
    app[GEO_KEY] = geo
    for prefix in ("/vod/", "/live/"):
        app.router.add_get(prefix + "{path:.*}", geo.steer)  # also HEAD
        app.router.add_route("OPTIONS", prefix + "{path:.*}", geo.steer)
    app.router.add_get("/healthz", geo.healthz)
    app.cleanup_ctx.append(geo.lifecycle)
    app.on_response_prepare.append(_cors)
    return app
