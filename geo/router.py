"""Which edge serves this client: pure logic, no I/O, so it is unit-testable and reusable.

The client's region is the nearest one (great-circle) that has a healthy edge; unplaceable
clients start from the default region. Within a region, the least loaded healthy edges take
turns (load: what the edge reported at its last health probe, plus the clients sent to it since).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from geo.distance import Coordinates
from geo.regions import Region, RegionMap

HealthView = Callable[[str], bool]
"""Answers "is this edge URL healthy now?" (e.g. HealthChecker.is_healthy)."""
LoadView = Callable[[str], float]
"""Answers "how busy is this edge URL?" (e.g. HealthChecker.load); lower is better."""


def _unloaded(edge: str) -> float:
    return 0.0


class NoHealthyEdge(Exception):
    """No region has a healthy edge."""


@dataclass(frozen=True)
class Route:
    region: str
    edge: str
    fallback: bool  # the client's own region had no healthy edge


class Router:
    def __init__(self, regions: RegionMap) -> None:
        self.regions = regions
        self._unplaced_order = regions.nearest(None)  # fixed, so computed once
        self._turn = dict.fromkeys(regions, 0)

    def candidates(self, location: Coordinates | None) -> list[Region]:
        """Regions in the order this client would be sent to them."""
        return self._unplaced_order if location is None else self.regions.nearest(location)

    def route(self, location: Coordinates | None, healthy: HealthView,
              load: LoadView = _unloaded) -> Route:
        """The edge for a client at `location` (None: unplaceable). Raises NoHealthyEdge."""
        for rank, region in enumerate(self.candidates(location)):
            edges = [edge for edge in region.edges if healthy(edge)]
            if edges:
                least = min(map(load, edges))
                edges = [edge for edge in edges if load(edge) <= least]
                turn = self._turn[region.name]
                self._turn[region.name] = turn + 1
                return Route(region.name, edges[turn % len(edges)], fallback=rank > 0)
        raise NoHealthyEdge("no region has a healthy edge")

    def order(self, location: Coordinates | None, healthy: HealthView,
              load: LoadView = _unloaded) -> list[str]:
        """Every healthy edge, best first for this client: regions nearest first, and within a
        region the least loaded first. Empty when none is healthy."""
        return [edge for region in self.candidates(location)
                for edge in sorted((e for e in region.edges if healthy(e)), key=load)]
