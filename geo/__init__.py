"""geo: send every player to its nearest healthy edge.

The distance, region map, locate and router modules do not need aiohttp, so edge/ can import them
to order its origins by the same rule (`RegionMap.origins_nearest`, `nearest`) without pulling
in the HTTP app.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from geo.distance import Coordinates, great_circle_km, nearest
from geo.regions import ConfigError, Region, RegionMap, RegionsError, load_regions, parse_regions
from geo.router import NoHealthyEdge, Route, Router

if TYPE_CHECKING:
    from aiohttp import web

__all__ = [
    "ConfigError", "Coordinates", "NoHealthyEdge", "Region", "RegionMap", "RegionsError", "Route",
    "Router", "great_circle_km", "load_regions", "make_app", "nearest", "parse_regions",
]


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
    """Build the geo aiohttp application; see `geo.app.make_app`."""
    from geo.app import make_app as _make_app

    return _make_app(regions_file, geoip_db, trusted_proxies, probe_interval=probe_interval,
                     probe_timeout=probe_timeout, fall=fall, rise=rise)
