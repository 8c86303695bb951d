"""The region map: which regions exist, where they are, and their edges and origins.

The TOML format is a contract (`reel up` writes it)::

    default = "eu-west"            # region for clients we cannot place

    [regions.eu-west]
    lat = 51.51
    lon = -0.13
    edges = ["http://127.0.0.1:8410"]
    origins = ["http://127.0.0.1:8402"]

Unknown keys are ignored so the file can grow without breaking older readers.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from geo.distance import Coordinates, nearest

# Region names end up in metric labels, headers and logs: keep them plain.
_REGION_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


class ConfigError(ValueError):
    """geo refuses to start with this configuration; the message says why."""


class RegionsError(ConfigError):
    """The regions file is unreadable or invalid; the message names the region and field."""


@dataclass(frozen=True)
class Region:
    name: str
    lat: float
    lon: float
    edges: tuple[str, ...]  # base URLs, without a trailing slash
    origins: tuple[str, ...] = ()

    @property
    def location(self) -> Coordinates:
        return (self.lat, self.lon)


class RegionMap(Mapping[str, Region]):
    """Regions by name, in file order, plus the default region."""

    def __init__(self, regions: Mapping[str, Region], default: str) -> None:
        if not regions:
            raise RegionsError("regions: no regions defined")
        if default not in regions:
            raise RegionsError(f"default: {default!r} is not a region "
                               f"(regions: {', '.join(regions)})")
        self._regions = dict(regions)
        self.default = default

    def __getitem__(self, name: str) -> Region:
        return self._regions[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._regions)

    def __len__(self) -> int:
        return len(self._regions)

    def __repr__(self) -> str:
        return f"RegionMap({list(self._regions)!r}, default={self.default!r})"

    @property
    def default_region(self) -> Region:
        return self._regions[self.default]

    @property
    def edges(self) -> list[str]:
        """Every edge URL, each once."""
        return [edge for region in self._regions.values() for edge in region.edges]

    def nearest(self, point: Coordinates | None) -> list[Region]:
        """Regions nearest first from `point`; None (unplaceable): the default region, then
        the regions nearest to it."""
        return nearest(point or self.default_region.location, self._regions.values())

    def origins_nearest(self, region: str) -> list[str]:
        """Origin URLs as seen from `region`: its own first, then other regions' by distance."""
        seen: dict[str, None] = {}
        for other in nearest(self[region].location, self._regions.values()):
            seen.update(dict.fromkeys(other.origins))
        return list(seen)


def load_regions(path: Path | str) -> RegionMap:
    """Read and validate a regions file. Raises RegionsError with a message fit for a human."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RegionsError(f"{path}: cannot read regions file: {exc}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RegionsError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_regions(data)
    except RegionsError as exc:
        raise RegionsError(f"{path}: {exc}") from None


def parse_regions(data: Mapping[str, Any]) -> RegionMap:
    """Validate already-parsed TOML (a dict) into a RegionMap."""
    default = data.get("default")
    if default is None:
        raise RegionsError("default: missing (name the region for clients we cannot place)")
    if not isinstance(default, str):
        raise RegionsError(f"default: must be a region name, not {default!r}")
    table = data.get("regions")
    if not isinstance(table, Mapping) or not table:
        raise RegionsError("regions: missing or empty (add a [regions.NAME] table per region)")

    regions: dict[str, Region] = {}
    owner: dict[str, str] = {}  # edge URL -> region, so an edge is listed once
    for name, spec in table.items():
        if not _REGION_NAME.fullmatch(name):
            raise RegionsError(f"regions.{name}: invalid region name "
                               "(letters, digits, '_', '.', '-'; at most 64)")
        if not isinstance(spec, Mapping):
            raise RegionsError(f"regions.{name}: must be a table with lat, lon, edges")
        region = Region(
            name=name,
            lat=_coordinate(name, spec, "lat", 90.0),
            lon=_coordinate(name, spec, "lon", 180.0),
            edges=_urls(name, spec, "edges", required=True),
            origins=_urls(name, spec, "origins", required=False),
        )
        for edge in region.edges:
            if edge in owner:
                where = "twice" if owner[edge] == name else f"also in regions.{owner[edge]}"
                raise RegionsError(f"regions.{name}.edges: {edge} is listed {where}")
            owner[edge] = name
        regions[name] = region
    return RegionMap(regions, default)


def _coordinate(region: str, spec: Mapping[str, Any], field: str, limit: float) -> float:
    value = spec.get(field)
    where = f"regions.{region}.{field}"
    if value is None:
        raise RegionsError(f"{where}: missing")
    # bool is an int in Python; `lat = true` is a mistake, not 1 degree.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RegionsError(f"{where}: must be a number of degrees, not {value!r}")
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise RegionsError(f"{where}: {value} is out of range [-{limit:g}, {limit:g}]")
    return float(value)


def _urls(region: str, spec: Mapping[str, Any], field: str, *, required: bool) -> tuple[str, ...]:
    where = f"regions.{region}.{field}"
    values = spec.get(field)
    if values is None and not required:
        return ()
    if not isinstance(values, list):
        raise RegionsError(f"{where}: must be a list of http(s) URLs")
    if required and not values:
        raise RegionsError(f"{where}: empty (a region needs at least one)")
    urls = []
    for value in values:
        if not isinstance(value, str):
            raise RegionsError(f"{where}: {value!r} is not a URL string")
        urls.append(_base_url(where, value))
    return tuple(urls)


def _base_url(where: str, value: str) -> str:
    # It ends up in Location headers: no whitespace or control characters.
    if any(ch.isspace() or not ch.isprintable() for ch in value):
        raise RegionsError(f"{where}: {value!r} contains whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError as exc:
        raise RegionsError(f"{where}: {value!r} is not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RegionsError(f"{where}: {value!r} is not an http(s) URL with a host")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise RegionsError(f"{where}: {value!r} must be a plain base URL "
                           "(no query, fragment or credentials)")
    # Paths are appended to it, so store it without a trailing slash.
    return value.rstrip("/")
