"""The geo HTTP app: 302 each player to the nearest healthy edge, steered masters and steering
manifests for HLS players (HLS Content Steering), plus /healthz and /metrics.

URL space:
  /vod/...  /live/...                        302 to the client's edge (any player, any object)
  /steer/{vod|live}/{ID}/master.m3u8          the packaged master, one Pathway per region
  /steer/{vod|live}/{ID}/steering.json?p=...  the steering manifest for this client
"""

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

from geo.distance import Coordinates
from geo.health import HealthChecker
from geo.locate import Locator, TrustedProxies, client_address
from geo.masters import Forbidden, MasterCache, MasterUnavailable, UnknownVideo
from geo.regions import ConfigError, RegionMap, load_regions
from geo.router import NoHealthyEdge, Router
from geo.steering import PATHWAY_ID, Master, Pathway, pathway_query, render_master, steering_manifest
from reel import metrics
from reel.http import problem
from reel.logs import fields
from reel.playback_token import KeyRing, Viewer, split_path, token_path

log = logging.getLogger("geo")

# What may be steered: vod/ or live/ and then plain segments (the object layout's alphabet).
# Checked on the raw path, so %2e%2e, %2f, %5c, %00 and friends never match; and a segment
# cannot start with a dot, so neither can `..`.
# A playback token is a segment of its own starting with `~` (reel.playback_token).
_STEERABLE = re.compile(r"/(?:vod|live)(?:/[A-Za-z0-9_~-][A-Za-z0-9_.-]*)+")
_MAX_PATH = 512
# Characters a query string may keep as they are; anything else (spaces, non-ASCII) is escaped
# so the Location header is always valid.
_QUERY_SAFE = "!$&'()*+,/:;=?@-._~%"
_EXPOSED = "Location, Retry-After, X-Reel-Region"
# A steered master or steering manifest: the object layout's IDs (DESIGN.md).
_STEERED = re.compile(
    r"/steer/(vod|live)/([A-Za-z0-9_-]{6,64})/(?:~([A-Za-z0-9_.-]{1,160})/)?(master\.m3u8|steering\.json)"
)
MASTER_TOKEN_TTL = 60.0  # the token geo signs for its own fetch of a master
_MAX_KNOWN_PATHWAYS = 256
_MAX_THROUGHPUT_DIGITS = 15


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
        steering_ttl: int,
        ring: KeyRing | None = None,
    ) -> None:
        self.ring = ring
        self.regions = regions
        self.locator = locator
        self.trusted = trusted
        self.router = Router(regions)
        self.region_of = {edge: r.name for r in regions.values() for edge in r.edges}
        self.pathway_of = pathway_ids(regions)
        self.steering_ttl = steering_ttl
        self.masters = MasterCache(timeout=max(probe_timeout, 2.0))
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
        self.steered_masters = Counter("reel_geo_steered_masters_total",
                                       "Steered master playlists served, by the first Pathway",
                                       ["pathway"], registry=registry)
        self.steering_requests = Counter("reel_geo_steering_requests_total",
                                         "Steering manifests served, by the Pathway put first",
                                         ["pathway"], registry=registry)
        self.steering_errors = Counter("reel_geo_steering_errors_total",
                                       "Steered master and manifest requests refused, by status",
                                       ["status"], registry=registry)
        for pathway in self.pathway_of.values():
            self.steered_masters.labels(pathway)
            self.steering_requests.labels(pathway)
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
        await self.masters.start()
        yield
        await self.masters.close()
        await self.health.stop()
        self.locator.close()

    def _edge_changed(self, edge: str, healthy: bool) -> None:
        self.edge_healthy.labels(edge).set(1 if healthy else 0)
        state = self.health.states[edge]
        log.log(logging.INFO if healthy else logging.WARNING,
                "edge up" if healthy else "edge down",
                extra=fields(edge=edge, region=self.region_of[edge],
                             error=None if healthy else state.last_error))

    def _locate(self, request: web.Request) -> Coordinates | None:
        address = client_address(request.remote,
                                 request.headers.getall("X-Forwarded-For", ()), self.trusted)
        location = self.locator.locate(address)
        if location is None:
            self.unknown_clients.inc()
        return location

    def _token_refused(self, request: web.Request, video: str, token: str | None) -> bool:
        """A token that is there must be valid (for the 302 too: geo answers what an edge would)."""
        if token is None:
            return False
        address = client_address(request.remote, request.headers.getall("X-Forwarded-For", ()),
                                 self.trusted)
        return self.ring is None or not self.ring.verify(token, video, Viewer(None, address))

    def _fetch_path(self, path: str, video: str, token: str | None) -> str:
        """The master's path as geo asks edges for it: with a token of its own when it has the
        key ring (so one cached master serves every viewer), else with the asker's."""
        if self.ring is not None:
            return token_path(path, self.ring.sign(video, MASTER_TOKEN_TTL))
        return token_path(path, token) if token is not None else path

    def _no_healthy_edge(self) -> web.Response:
        self.no_healthy_edge.inc()
        return problem(503, "No healthy edge",
                       detail="no edge in any region is passing health checks; retry shortly",
                       headers={"Retry-After": self.retry_after})

    async def steer(self, request: web.Request) -> web.Response:
        url = request.rel_url
        path = url.raw_path
        if len(path) > _MAX_PATH or not _STEERABLE.fullmatch(path):
            return problem(404, "Not Found", detail="not a vod/ or live/ path")
        if request.method == "OPTIONS":
            return _preflight(request)
        plain, token = split_path(path)
        if self._token_refused(request, plain.split("/")[2], token):
            return self._forbidden()
        location = self._locate(request)
        try:
            route = self.router.route(location, self.health.is_healthy, self.health.load)
        except NoHealthyEdge:
            return self._no_healthy_edge()
        self.health.assign(route.edge)
        self.redirects.labels(route.region).inc()
        target = route.edge + path
        if url.raw_query_string:
            target += "?" + quote(url.raw_query_string, safe=_QUERY_SAFE)
        return web.Response(status=302, headers={
            "Location": target,
            "Cache-Control": "no-store",  # the answer depends on who asks and on edge health
            "X-Reel-Region": route.region,
        })

    async def steered(self, request: web.Request) -> web.Response:
        """A steered master, or the steering manifest for this client."""
        match = _STEERED.fullmatch(request.rel_url.raw_path)
        if match is None:
            return self._refuse(404, "Not Found",
                                "not /steer/{vod|live}/{ID}/master.m3u8 or steering.json")
        if request.method == "OPTIONS":
            return _preflight(request)
        kind, video, token, name = match.groups()
        if self._token_refused(request, video, token):
            return self._forbidden()
        known: list[str] = []
        if name == "steering.json":
            try:
                known = _steering_query(request.rel_url.query)
            except ValueError as exc:
                return self._refuse(400, "Bad steering request", str(exc))
        location = self._locate(request)
        order = self.router.order(location, self.health.is_healthy, self.health.load)
        if not order:
            self.steering_errors.labels("503").inc()
            return self._no_healthy_edge()
        found = await self._master(kind, video, token, order)
        if isinstance(found, web.Response):
            return found
        master = found
        # Every URI geo writes (the steered master's, the manifest's clones) keeps the token.
        directory = f"/{kind}/{video}/" + (f"~{token}/" if token is not None else "")
        if name == "steering.json":
            priority = [Pathway(self.pathway_of[edge], edge + directory) for edge in order]
            everyone = {self.pathway_of[edge]: Pathway(self.pathway_of[edge], edge + directory)
                        for edge in self.regions.edges}
            self.steering_requests.labels(priority[0].id).inc()
            return web.json_response(
                steering_manifest(master, priority, known, everyone, ttl=self.steering_ttl,
                                  reload="steering.json"),
                headers={"Cache-Control": "no-store", "X-Reel-Region": self.region_of[order[0]]})

        # One Pathway per region: its best healthy edge, regions nearest first; regions with no
        # healthy edge last (with their first edge), so steering can bring them back later.
        best: dict[str, str] = {}
        for edge in order:
            best.setdefault(self.region_of[edge], edge)
        edges = [*best.values(), *(region.edges[0] for region in self.router.candidates(location)
                                   if region.name not in best)]
        pathways = [Pathway(self.pathway_of[edge], edge + directory) for edge in edges]
        self.health.assign(order[0])
        self.steered_masters.labels(pathways[0].id).inc()
        body = render_master(master, pathways,
                             "steering.json?" + pathway_query(p.id for p in pathways))
        return web.Response(text=body, content_type="application/vnd.apple.mpegurl", headers={
            "Cache-Control": "no-store",  # made for this client, from edge health right now
            "X-Reel-Region": self.region_of[order[0]],
        })

    async def _master(self, kind: str, video: str, token: str | None,
                      order: list[str]) -> Master | web.Response:
        """The packaged master (cached without the token), or the refusal to answer with: a
        guarded master, or an unknown video the edges guard, only to a valid token."""
        path = f"/{kind}/{video}/master.m3u8"
        try:
            master, guarded = await self.masters.get(path, order, self._fetch_path(path, video, token))
        except UnknownVideo as exc:
            if exc.guarded and token is None:
                return self._forbidden()
            return self._refuse(404, "Unknown video", f"no complete {kind}/{video}")
        except Forbidden:
            return self._forbidden()
        except MasterUnavailable:
            return self._refuse(502, "Master playlist unavailable",
                                "no edge served this video's master playlist; retry shortly",
                                headers={"Retry-After": self.retry_after})
        return self._forbidden() if guarded and token is None else master

    def _forbidden(self) -> web.Response:
        """The one answer without a valid playback token, whether the video exists or not."""
        return self._refuse(403, "Forbidden", "this video needs a valid playback token")

    def _refuse(self, status: int, title: str, detail: str,
                headers: dict[str, str] | None = None) -> web.Response:
        self.steering_errors.labels(str(status)).inc()
        return problem(status, title, detail=detail, headers=headers)

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


def pathway_ids(regions: RegionMap) -> dict[str, str]:
    """Each edge's Pathway ID: its region's name for the region's first edge, NAME.2, NAME.3...
    for the others. Raises ConfigError if two edges would share one."""
    ids: dict[str, str] = {}
    for region in regions.values():
        for index, edge in enumerate(region.edges):
            ids[edge] = region.name if index == 0 else f"{region.name}.{index + 1}"
    if len(set(ids.values())) < len(ids):
        raise ConfigError("regions: region names clash with the Pathway IDs of other regions' "
                          "extra edges (NAME.2, NAME.3...); rename the region")
    return ids


def _steering_query(query: object) -> list[str]:
    """The Pathways the client's master defined (`p`), after checking what players add
    (`_HLS_pathway`, `_HLS_throughput`). Raises ValueError with what is wrong."""
    def one(name: str) -> str | None:
        values = query.getall(name, [])  # type: ignore[attr-defined]
        if len(values) > 1:
            raise ValueError(f"{name} given {len(values)} times")
        return values[0] if values else None

    known = one("p")
    if not known:
        raise ValueError("p (the Pathways of the steered master) is missing")
    ids = known.split(",")
    if len(ids) > _MAX_KNOWN_PATHWAYS:
        raise ValueError(f"p names more than {_MAX_KNOWN_PATHWAYS} Pathways")
    for pathway in ids:
        if not PATHWAY_ID.fullmatch(pathway):
            raise ValueError(f"p: {pathway[:70]!r} is not a Pathway ID")
    current = one("_HLS_pathway")
    if current is not None and not PATHWAY_ID.fullmatch(current):
        raise ValueError(f"_HLS_pathway: {current[:70]!r} is not a Pathway ID")
    throughput = one("_HLS_throughput")
    if throughput is not None and not (throughput.isascii() and throughput.isdigit()
                                       and len(throughput) <= _MAX_THROUGHPUT_DIGITS):
        raise ValueError("_HLS_throughput must be a whole number of bits per second")
    return list(dict.fromkeys(ids))


def _preflight(request: web.Request) -> web.Response:
    return web.Response(status=204, headers={
        "Access-Control-Allow-Methods": "GET, HEAD, OPTIONS",
        "Access-Control-Allow-Headers":
            request.headers.get("Access-Control-Request-Headers", "Range"),
        "Access-Control-Max-Age": "86400",
        "Vary": "Access-Control-Request-Headers",
    })


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
    steering_ttl: int = 10,
    ring: KeyRing | None = None,
) -> web.Application:
    """Build the geo app. Raises ConfigError (RegionsError for the regions file) before serving.

    `regions_file` may also be an already-loaded RegionMap. Edges are probed every
    `probe_interval` s (each probe limited to `probe_timeout` s); an edge goes down after `fall`
    consecutive failures and comes back after `rise` consecutive successes. Steering manifests
    tell players to come back after `steering_ttl` s. `ring` checks playback tokens (and signs
    geo's own fetches of masters); without it, tokens are refused and edges decide the rest.
    """
    if steering_ttl < 1:
        raise ConfigError(f"steering TTL must be at least 1 s, not {steering_ttl}")
    regions = regions_file if isinstance(regions_file, RegionMap) else load_regions(regions_file)
    trusted = TrustedProxies(trusted_proxies)
    if geoip_db is not None:
        Locator.check(geoip_db)  # fail now, with a clear message, rather than at startup

    app = web.Application(middlewares=[_errors])
    registry = metrics.install(app)
    try:
        geo = Geo(regions, Locator(geoip_db), trusted, registry, probe_interval=probe_interval,
                  probe_timeout=probe_timeout, fall=fall, rise=rise, steering_ttl=steering_ttl,
                  ring=ring)
    except ValueError as exc:  # the health checker's bounds
        raise ConfigError(str(exc)) from None
    app[GEO_KEY] = geo
    for prefix in ("/vod/", "/live/"):
        app.router.add_get(prefix + "{path:.*}", geo.steer)  # also HEAD
        app.router.add_route("OPTIONS", prefix + "{path:.*}", geo.steer)
    app.router.add_get("/steer/{path:.*}", geo.steered)
    app.router.add_route("OPTIONS", "/steer/{path:.*}", geo.steered)
    app.router.add_get("/healthz", geo.healthz)
    app.cleanup_ctx.append(geo.lifecycle)
    app.on_response_prepare.append(_cors)
    return app
