"""geo: send every player to its nearest healthy edge.

The distance, region map, locate and router modules do not need aiohttp, so edge/ can use them
to order its origins by the same rule (`RegionMap.origins_nearest`, `nearest`).
"""

from geo.app import make_app
from geo.distance import Coordinates, great_circle_km, nearest
from geo.regions import ConfigError, Region, RegionMap, RegionsError, load_regions, parse_regions
from geo.router import NoHealthyEdge, Route, Router

__all__ = [
    "ConfigError", "Coordinates", "NoHealthyEdge", "Region", "RegionMap", "RegionsError", "Route",
    "Router", "great_circle_km", "load_regions", "make_app", "nearest", "parse_regions",
]
