"""geo: send every player to its nearest healthy edge.

The distance, region map and router modules need neither aiohttp nor GeoIP2, and importing `geo`
loads only them, so edge/ uses them to order its origins by the same rule
(`geo.regions.RegionMap.origins_nearest`, `geo.distance.nearest`). The app (GeoIP2, health
probes, steering) is `geo.app.make_app`; `reel geo` is wired in `geo.cli`.
"""

from geo.distance import Coordinates, great_circle_km, nearest
from geo.regions import ConfigError, Region, RegionMap, RegionsError, load_regions, parse_regions
from geo.router import NoHealthyEdge, Route, Router

__all__ = [
    "ConfigError", "Coordinates", "NoHealthyEdge", "Region", "RegionMap", "RegionsError", "Route",
    "Router", "great_circle_km", "load_regions", "nearest", "parse_regions",
]
