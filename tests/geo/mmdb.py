"""Build small, real GeoIP2 City databases for tests (geo's own and end-to-end ones)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from mmdb_writer import MMDBWriter
from netaddr import IPSet

# (latitude, longitude, country ISO code) or the same plus a city name.
Place = tuple[float, float, str] | tuple[float, float, str, str]


def build_city_db(path: Path | str, networks: Mapping[str, Place]) -> Path:
    """Write a GeoIP2-City .mmdb at `path` placing each CIDR (IPv4 or IPv6) at its coordinates.

    Records carry the fields geoip2's City model reads (location, country, city), so
    `geoip2.database.Reader(path).city(ip)` works as on a MaxMind database.
    """
    # An IPv6 tree with IPv4 mapped in, as MaxMind ships it, so both families can be looked up.
    writer = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-City",
                        languages=["en"], description="reel test City database")
    for cidr, place in networks.items():
        lat, lon, iso = place[0], place[1], place[2]
        record: dict = {
            "location": {"latitude": float(lat), "longitude": float(lon)},
            "country": {"iso_code": iso, "names": {"en": iso}},
        }
        if len(place) > 3:
            record["city"] = {"names": {"en": place[3]}}
        writer.insert_network(IPSet([cidr]), record)
    path = Path(path)
    writer.to_db_file(str(path))
    return path
