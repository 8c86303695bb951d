"""Where is this client? Its address (behind trusted proxies), then its coordinates (GeoIP2).

No aiohttp here, so the logic is testable without a server and reusable by other front ends.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from pathlib import Path

import geoip2.database
import geoip2.errors
import maxminddb

from geo.distance import Coordinates
from geo.regions import ConfigError

log = logging.getLogger("geo.locate")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str | None) -> IPAddress | None:
    """An IP address from a socket peer or an X-Forwarded-For entry, or None if it is not one.

    Accepts the forms proxies write: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`.
    IPv4-mapped IPv6 (`::ffff:1.2.3.4`, what dual-stack sockets report) becomes IPv4, so it is
    found in the database and matched against IPv4 proxy networks.
    """
    if not text:
        return None
    text = text.strip()
    if text.startswith("["):  # [v6] or [v6]:port
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:  # v4:port (a bare v6 address has at least two colons)
        text = text.partition(":")[0]
    text = text.partition("%")[0]  # zone index (fe80::1%eth0) means nothing off this host
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


class TrustedProxies:
    """The addresses and networks whose X-Forwarded-For we believe."""

    def __init__(self, specs: Iterable[str] = ()) -> None:
        self.networks: list[IPNetwork] = []
        for spec in specs:
            try:
                self.networks.append(ipaddress.ip_network(spec.strip(), strict=False))
            except ValueError:
                raise ConfigError(f"trusted proxy {spec!r}: not an IP address or network") from None

    def __contains__(self, address: IPAddress) -> bool:
        return any(address in network for network in self.networks)

    def __bool__(self) -> bool:
        return bool(self.networks)


def client_address(
    remote: str | None, forwarded_for: Iterable[str], trusted: TrustedProxies
) -> IPAddress | None:
    """The client's address: the socket peer, unless that is a trusted proxy.

    Then X-Forwarded-For is read right to left (each proxy appends the peer it saw) and the first
    address that is not itself a trusted proxy is the client. Anything left of that was written by
    the client and could be forged. `forwarded_for` is every X-Forwarded-For header, in order.
    None when the address is unusable; the caller treats the client as unplaceable.
    """
    address = parse_address(remote)
    if address is None or not trusted:
        return address
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    for hop in reversed(hops):
        if address not in trusted:
            return address
        address = parse_address(hop)
        if address is None:
            return None  # a proxy we trust passed on garbage: we cannot place this client
    return address


class Locator:
    """Coordinates of an address from a GeoIP2 (or GeoLite2, DB-IP) City database.

    `open()` maps the database once; lookups are then synchronous and take microseconds, so they
    run on the event loop. Without a database every address is unplaceable.
    """

    def __init__(self, db_path: Path | str | None) -> None:
        self.db_path = Path(db_path) if db_path is not None else None
        self._reader: geoip2.database.Reader | None = None

    @staticmethod
    def check(db_path: Path | str) -> None:
        """Raise ConfigError unless `db_path` opens as a City database."""
        Locator._open(Path(db_path)).close()

    @staticmethod
    def _open(path: Path) -> geoip2.database.Reader:
        try:
            reader = geoip2.database.Reader(str(path))
        except (OSError, ValueError, maxminddb.InvalidDatabaseError) as exc:
            raise ConfigError(f"{path}: cannot open GeoIP2 database: {exc}") from None
        db_type = reader.metadata().database_type
        if "City" not in db_type:
            reader.close()
            raise ConfigError(f"{path}: is a {db_type} database; geo needs a City database "
                              "(latitude and longitude)")
        return reader

    def open(self) -> None:
        if self.db_path is not None and self._reader is None:
            self._reader = self._open(self.db_path)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def locate(self, address: IPAddress | None) -> Coordinates | None:
        """(lat, lon) of `address`, or None: no database, not in it, or no coordinates there.

        Private and loopback addresses are simply absent from public databases; a private
        database may place them on purpose, so they are looked up like any other.
        """
        if address is None or self._reader is None:
            return None
        try:
            location = self._reader.city(address).location
        except geoip2.errors.AddressNotFoundError:
            return None
        except (ValueError, maxminddb.InvalidDatabaseError) as exc:
            # ValueError: an IPv6 address against an IPv4-only database.
            log.debug("geoip lookup failed for %s: %s", address, exc)
            return None
        if location.latitude is None or location.longitude is None:
            return None
        return (location.latitude, location.longitude)
