"""geo's pure parts: distance, regions file, client address, GeoIP lookup, router, hysteresis."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import geoip2.database
import pytest

from geo import (
    ConfigError,
    NoHealthyEdge,
    Region,
    RegionMap,
    RegionsError,
    Router,
    great_circle_km,
    load_regions,
    nearest,
)
from geo.health import HealthChecker
from geo.locate import Locator, TrustedProxies, client_address, parse_address
from tests.geo.conftest import LONDON, LONDON_V6, NOT_IN_DB, PLACES, SYDNEY

LONDON_C = (51.51, -0.13)
SYDNEY_C = (-33.87, 151.21)
NEW_YORK_C = (40.71, -74.01)


# --- distance -------------------------------------------------------------------------------

def test_great_circle_known_distances() -> None:
    assert great_circle_km(LONDON_C, LONDON_C) == 0
    assert great_circle_km(LONDON_C, NEW_YORK_C) == pytest.approx(5570, rel=0.01)
    assert great_circle_km(LONDON_C, SYDNEY_C) == pytest.approx(16990, rel=0.01)
    assert great_circle_km(SYDNEY_C, LONDON_C) == great_circle_km(LONDON_C, SYDNEY_C)
    assert great_circle_km((0, 0), (0, 180)) == pytest.approx(20015, rel=0.001)  # antipodes
    # Across the antimeridian: 2 degrees of longitude on the equator, not 358.
    assert great_circle_km((0, 179), (0, -179)) == pytest.approx(222.4, rel=0.01)


def test_nearest_orders_and_keeps_ties_stable() -> None:
    places = [Region("syd", *SYDNEY_C, ("http://s",)), Region("nyc", *NEW_YORK_C, ("http://n",)),
              Region("lon", *LONDON_C, ("http://l",)), Region("lon2", *LONDON_C, ("http://l2",))]
    paris = (48.86, 2.35)
    assert [r.name for r in nearest(paris, places)] == ["lon", "lon2", "nyc", "syd"]


# --- regions file ---------------------------------------------------------------------------

GOOD = """\
default = "eu-west"

[regions.eu-west]
lat = 51.51
lon = -0.13
edges = ["http://127.0.0.1:8410/"]
origins = ["http://127.0.0.1:8402"]

[regions.ap-southeast]
lat = -33.87
lon = 151
edges = ["http://127.0.0.1:8411", "https://edge.example:443"]
origins = ["http://127.0.0.1:8403"]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "regions.toml"
    path.write_text(text)
    return path


def test_load_regions(tmp_path: Path) -> None:
    regions = load_regions(write(tmp_path, GOOD))
    assert list(regions) == ["eu-west", "ap-southeast"]
    assert regions.default == "eu-west"
    eu = regions["eu-west"]
    assert eu.location == (51.51, -0.13)
    assert eu.edges == ("http://127.0.0.1:8410",)  # trailing slash dropped
    assert regions["ap-southeast"].lon == 151.0
    assert regions.edges == ["http://127.0.0.1:8410", "http://127.0.0.1:8411",
                             "https://edge.example:443"]
    # edge/ orders origins this way: its own region's first, then by distance.
    assert regions.origins_nearest("ap-southeast") == ["http://127.0.0.1:8403",
                                                      "http://127.0.0.1:8402"]


REGION = '[regions.eu-west]\nlat = 51.5\nlon = 0\nedges = ["http://127.0.0.1:1"]\n'


@pytest.mark.parametrize(("text", "expected"), [
    ("default = ", "not valid TOML"),
    (REGION, "default: missing"),
    ('default = "eu-west"\n', "regions: missing or empty"),
    ('default = "mars"\n' + REGION, "default: 'mars' is not a region (regions: eu-west)"),
    ('default = "eu-west"\n' + REGION.replace("lat = 51.5\n", ""), "regions.eu-west.lat: missing"),
    ('default = "eu-west"\n' + REGION.replace("lat = 51.5", "lat = 91"),
     "regions.eu-west.lat: 91 is out of range [-90, 90]"),
    ('default = "eu-west"\n' + REGION.replace("lon = 0", "lon = -180.5"),
     "regions.eu-west.lon: -180.5 is out of range [-180, 180]"),
    ('default = "eu-west"\n' + REGION.replace("lon = 0", 'lon = "west"'),
     "regions.eu-west.lon: must be a number"),
    ('default = "eu-west"\n' + REGION.replace("lat = 51.5", "lat = true"),
     "regions.eu-west.lat: must be a number"),
    ('default = "eu-west"\n' + REGION.replace("lat = 51.5", "lat = nan"),
     "regions.eu-west.lat: nan is out of range"),
    ('default = "eu-west"\n' + REGION.replace('["http://127.0.0.1:1"]', "[]"),
     "regions.eu-west.edges: empty"),
    ('default = "eu-west"\n' + REGION.replace('edges = ["http://127.0.0.1:1"]\n', ""),
     "regions.eu-west.edges: must be a list"),
    ('default = "eu-west"\n' + REGION.replace("http://127.0.0.1:1", "ftp://127.0.0.1"),
     "regions.eu-west.edges: 'ftp://127.0.0.1' is not an http(s) URL"),
    ('default = "eu-west"\n' + REGION.replace("http://127.0.0.1:1", "127.0.0.1:8410"),
     "regions.eu-west.edges: '127.0.0.1:8410' is not an http(s) URL"),
    ('default = "eu-west"\n' + REGION.replace("http://127.0.0.1:1", "http://h:port"),
     "regions.eu-west.edges: 'http://h:port' is not a valid URL"),
    ('default = "eu-west"\n' + REGION + 'origins = ["http://ok", 7]\n',
     "regions.eu-west.origins: 7 is not a URL string"),
    ('default = "eu-west"\n' + REGION.replace('"http://127.0.0.1:1"',
                                              '"http://127.0.0.1:1", "http://127.0.0.1:1/"'),
     "regions.eu-west.edges: http://127.0.0.1:1 is listed twice"),
    ('default = "eu-west"\n' + REGION + REGION.replace("eu-west", "eu-east"),
     "regions.eu-east.edges: http://127.0.0.1:1 is listed also in regions.eu-west"),
    ('default = "eu-west"\n[regions]\neu-west = 3\n', "regions.eu-west: must be a table"),
    ('default = "a b"\n[regions."a b"]\nlat = 0\nlon = 0\nedges = ["http://x"]\n',
     "regions.a b: invalid region name"),
])
def test_bad_regions_files(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RegionsError) as info:
        load_regions(path)
    assert expected in str(info.value)
    assert str(path) in str(info.value)  # the operator sees which file


def test_missing_regions_file(tmp_path: Path) -> None:
    with pytest.raises(RegionsError, match="cannot read regions file"):
        load_regions(tmp_path / "nope.toml")


# --- client address -------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("81.2.69.142", "81.2.69.142"),
    (" 81.2.69.142:5678 ", "81.2.69.142"),
    ("2001:db8::1", "2001:db8::1"),
    ("[2001:db8::1]:443", "2001:db8::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("::ffff:81.2.69.142", "81.2.69.142"),
    ("unknown", None),
    ("", None),
    (None, None),
])
def test_parse_address(text: str | None, expected: str | None) -> None:
    assert parse_address(text) == (expected and ipaddress.ip_address(expected))


def test_client_address_believes_only_trusted_proxies() -> None:
    trusted = TrustedProxies(["127.0.0.1", "10.0.0.0/8"])
    ip = ipaddress.ip_address
    # Not from a proxy: X-Forwarded-For is whatever the client wants it to be; ignore it.
    assert client_address("192.0.2.7", [SYDNEY], trusted) == ip("192.0.2.7")
    assert client_address("192.0.2.7", [SYDNEY], TrustedProxies()) == ip("192.0.2.7")
    # From a proxy: the right-most address that is not a proxy is the client...
    assert client_address("127.0.0.1", [SYDNEY], trusted) == ip(SYDNEY)
    assert client_address("127.0.0.1", [f"{SYDNEY}, 10.1.2.3"], trusted) == ip(SYDNEY)
    # ...and what the client wrote to the left of it (a forgery) is not believed.
    assert client_address("127.0.0.1", [f"{SYDNEY}, {LONDON}"], trusted) == ip(LONDON)
    # Several headers are one list, in order.
    assert client_address("127.0.0.1", [SYDNEY, f"{LONDON}, 10.0.0.1"], trusted) == ip(LONDON)
    # Only proxies all the way: the left-most one is as close to a client as we get.
    assert client_address("127.0.0.1", ["10.0.0.9, 10.0.0.1"], trusted) == ip("10.0.0.9")
    assert client_address("127.0.0.1", [], trusted) == ip("127.0.0.1")
    # Garbage passed on by a trusted proxy: unplaceable.
    assert client_address("127.0.0.1", ["not-an-ip"], trusted) is None
    assert client_address("::ffff:127.0.0.1", [LONDON], trusted) == ip(LONDON)
    assert client_address(None, [LONDON], trusted) is None


def test_trusted_proxy_must_parse() -> None:
    with pytest.raises(ConfigError, match="trusted proxy 'localhost'"):
        TrustedProxies(["localhost"])


# --- GeoIP lookup ---------------------------------------------------------------------------

def test_city_db_helper_builds_a_real_geoip2_database(city_db: Path) -> None:
    with geoip2.database.Reader(str(city_db)) as reader:
        city = reader.city(LONDON)
        assert (city.location.latitude, city.location.longitude) == (51.5142, -0.0931)
        assert city.country.iso_code == "GB"
        assert city.city.name == "London"
        assert reader.city(SYDNEY).country.iso_code == "AU"
        assert reader.city(LONDON_V6).city.name == "London"


def test_locator(city_db: Path) -> None:
    locator = Locator(city_db)
    locator.open()
    try:
        ip = ipaddress.ip_address
        assert locator.locate(ip(LONDON)) == PLACES["81.2.69.0/24"][:2]
        assert locator.locate(ip(LONDON_V6)) == PLACES["2a02:8010::/32"][:2]
        assert locator.locate(ip(SYDNEY)) == PLACES["1.128.0.0/11"][:2]
        assert locator.locate(ip(NOT_IN_DB)) is None
        assert locator.locate(ip("127.0.0.1")) is None
        assert locator.locate(ip("10.1.2.3")) is None
        assert locator.locate(None) is None
    finally:
        locator.close()
    assert Locator(None).locate(ipaddress.ip_address(LONDON)) is None  # no database


def test_locator_refuses_what_is_not_a_city_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.mmdb"
    junk.write_bytes(b"not a database")
    with pytest.raises(ConfigError, match="cannot open GeoIP2 database"):
        Locator.check(junk)
    with pytest.raises(ConfigError, match="cannot open GeoIP2 database"):
        Locator.check(tmp_path / "missing.mmdb")


# --- router ---------------------------------------------------------------------------------

def region_map() -> RegionMap:
    regions = [
        Region("eu-west", *LONDON_C, ("http://eu1", "http://eu2")),
        Region("us-east", *NEW_YORK_C, ("http://us",)),
        Region("ap-southeast", *SYDNEY_C, ("http://ap",)),
    ]
    return RegionMap({r.name: r for r in regions}, default="us-east")


def test_router_picks_nearest_region_and_rotates_its_edges() -> None:
    router = Router(region_map())
    everyone = set(region_map().edges).__contains__
    near_london = (51.0, 0.5)
    picks = [router.route(near_london, everyone) for _ in range(4)]
    assert {p.region for p in picks} == {"eu-west"}
    assert [p.edge for p in picks] == ["http://eu1", "http://eu2", "http://eu1", "http://eu2"]
    assert not picks[0].fallback
    assert router.route((-30.0, 150.0), everyone).edge == "http://ap"


def test_router_unplaceable_clients_use_default_region() -> None:
    router = Router(region_map())
    route = router.route(None, lambda edge: True)
    assert (route.region, route.edge, route.fallback) == ("us-east", "http://us", False)
    # Default region down: the region nearest to it (London, not Sydney).
    assert router.route(None, lambda edge: edge != "http://us").region == "eu-west"


def test_router_skips_unhealthy_edges_and_regions() -> None:
    router = Router(region_map())
    assert {router.route(LONDON_C, lambda e: e != "http://eu1").edge for _ in range(3)} == {
        "http://eu2"}
    route = router.route(LONDON_C, lambda e: not e.startswith("http://eu"))
    assert (route.region, route.fallback) == ("us-east", True)
    with pytest.raises(NoHealthyEdge):
        router.route(LONDON_C, lambda e: False)


# --- hysteresis -----------------------------------------------------------------------------

def test_health_hysteresis() -> None:
    changes: list[tuple[str, bool]] = []
    checker = HealthChecker(["http://e"], fall=2, rise=3,
                            on_change=lambda e, h: changes.append((e, h)))
    assert checker.is_healthy("http://e")  # optimistic start
    assert not checker.is_healthy("http://unknown")
    assert not checker.record("http://e", False, "HTTP 503")
    assert not checker.record("http://e", True)  # a success resets the failure count
    assert not checker.record("http://e", False)
    assert checker.is_healthy("http://e")
    assert checker.record("http://e", False, "timeout")
    assert not checker.is_healthy("http://e")
    assert checker.states["http://e"].last_error == "timeout"
    for _ in range(2):
        assert not checker.record("http://e", True)
    assert not checker.record("http://e", False)  # a failure resets the success count
    for _ in range(2):
        checker.record("http://e", True)
    assert not checker.is_healthy("http://e")
    assert checker.record("http://e", True)
    assert checker.is_healthy("http://e")
    assert changes == [("http://e", False), ("http://e", True)]
