"""Great-circle distance and nearest-first ordering.

No aiohttp here: edge/ imports this to order its origins, so geo and edge agree on "nearest".
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Protocol, TypeVar

# Mean Earth radius (IUGG). A sphere is accurate to ~0.5%, far better than GeoIP coordinates.
EARTH_RADIUS_KM = 6371.0088

Coordinates = tuple[float, float]
"""(latitude, longitude) in decimal degrees."""


class Located(Protocol):
    @property
    def location(self) -> Coordinates: ...


L = TypeVar("L", bound=Located)


def great_circle_km(a: Coordinates, b: Coordinates) -> float:
    """Distance in km between two (lat, lon) points, by the haversine formula."""
    lat1, lon1 = map(math.radians, a)
    lat2, lon2 = map(math.radians, b)
    h = (math.sin((lat2 - lat1) / 2) ** 2
         + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2)
    # min() guards asin against rounding just above 1 for antipodal points.
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


def nearest(point: Coordinates, places: Iterable[L]) -> list[L]:
    """`places` ordered nearest first from `point`; ties keep their given order."""
    return sorted(places, key=lambda place: great_circle_km(point, place.location))
