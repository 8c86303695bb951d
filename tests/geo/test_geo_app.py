"""geo over HTTP: a real geo app, real edge servers and a real City database, all on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from mmdb_writer import MMDBWriter
from netaddr import IPSet

import geo.app
from geo import ConfigError, RegionsError
from tests.geo.conftest import LONDON, LONDON_V6, NEW_YORK, NOT_IN_DB, SYDNEY, EdgeServer

FAST = {"probe_interval": 0.05, "probe_timeout": 0.3, "fall": 2, "rise": 2}
SEGMENT = "/vod/abc123/v720/seg_00001.m4s"


async def start_geo(app: web.Application) -> TestClient:
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


@pytest.fixture
async def client(regions_file: Path, city_db: Path) -> TestClient:
    # The test client connects from 127.0.0.1: a trusted proxy, so X-Forwarded-For places it.
    client = await start_geo(geo.app.make_app(regions_file, city_db, ["127.0.0.1"], **FAST))
    yield client
    await client.close()


async def steer(client: TestClient, client_ip: str | None = None, path: str = SEGMENT,
                method: str = "GET") -> tuple[int, str | None, str | None]:
    headers = {"X-Forwarded-For": client_ip} if client_ip else {}
    async with client.request(method, path, headers=headers, allow_redirects=False) as resp:
        await resp.read()
        return resp.status, resp.headers.get("X-Reel-Region"), resp.headers.get("Location")


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 4.0) -> None:
    """Poll an async check until it returns truthy (health changes take a few probe rounds)."""
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def region_is(client: TestClient, client_ip: str, region: str) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return (await steer(client, client_ip))[1] == region
    return check


async def test_redirects_to_nearest_region(client: TestClient, edges: dict[str, EdgeServer]
                                           ) -> None:
    async with client.get(SEGMENT, headers={"X-Forwarded-For": LONDON},
                          allow_redirects=False) as resp:
        assert resp.status == 302
        assert resp.headers["Location"] in (edges["eu1"].url + SEGMENT, edges["eu2"].url + SEGMENT)
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "Location" in resp.headers["Access-Control-Expose-Headers"]
        assert resp.headers["X-Reel-Region"] == "eu-west"
    assert await steer(client, SYDNEY) == (302, "ap-southeast", edges["ap"].url + SEGMENT)
    assert await steer(client, NEW_YORK) == (302, "us-east", edges["us"].url + SEGMENT)
    assert (await steer(client, LONDON_V6))[1] == "eu-west"
    assert await steer(client, SYDNEY, method="HEAD") == (
        302, "ap-southeast", edges["ap"].url + SEGMENT)
    live = "/live/stream42/v480/index.m3u8"
    assert await steer(client, SYDNEY, path=live) == (302, "ap-southeast", edges["ap"].url + live)


async def test_edges_of_a_region_take_turns(client: TestClient, edges: dict[str, EdgeServer]
                                            ) -> None:
    seen = {(await steer(client, LONDON))[2] for _ in range(4)}
    # eu2 was written with a trailing slash in the regions file: no double slash here.
    assert seen == {edges["eu1"].url + SEGMENT, edges["eu2"].url + SEGMENT}


async def test_query_string_is_kept(client: TestClient, edges: dict[str, EdgeServer]) -> None:
    path = "/vod/abc123/master.m3u8?token=a%20b&start=10&x=%E2%9C%93"
    assert await steer(client, SYDNEY, path=path) == (302, "ap-southeast", edges["ap"].url + path)


async def test_unplaceable_clients_go_to_default_region(client: TestClient) -> None:
    assert (await steer(client))[1] == "us-east"  # loopback, no X-Forwarded-For
    assert (await steer(client, NOT_IN_DB))[1] == "us-east"
    assert (await steer(client, "10.20.30.40"))[1] == "us-east"
    assert (await steer(client, "garbage"))[1] == "us-east"
    text = await (await client.get("/metrics")).text()
    assert "reel_geo_unknown_clients_total 4.0" in text
    assert 'reel_geo_redirects_total{region="us-east"} 4.0' in text


async def test_forwarded_for_from_untrusted_peer_is_ignored(regions_file: Path, city_db: Path
                                                            ) -> None:
    for trusted in ([], ["10.0.0.0/8", "192.0.2.1"]):
        client = await start_geo(geo.app.make_app(regions_file, city_db, trusted, **FAST))
        try:
            assert (await steer(client, SYDNEY))[1] == "us-east"
        finally:
            await client.close()


async def test_forged_forwarded_for_entries_are_not_believed(client: TestClient) -> None:
    # The client claims Sydney; the trusted proxy appended the address it really saw (London).
    assert (await steer(client, f"{SYDNEY}, {LONDON}"))[1] == "eu-west"


async def test_preflight(client: TestClient) -> None:
    headers = {"Origin": "https://player.example", "Access-Control-Request-Method": "GET",
               "Access-Control-Request-Headers": "range"}
    async with client.options(SEGMENT, headers=headers) as resp:
        assert resp.status == 204
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert "GET" in resp.headers["Access-Control-Allow-Methods"]
        assert resp.headers["Access-Control-Allow-Headers"] == "range"


async def raw_status(client: TestClient, target: str) -> tuple[int, bytes]:
    """Send `target` byte for byte (HTTP clients would normalise `..` away) and read the reply."""
    reader, writer = await asyncio.open_connection("127.0.0.1", client.port)
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: geo\r\nX-Forwarded-For: {LONDON}\r\n"
                     "Connection: close\r\n\r\n".encode("latin-1"))
        reply = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
    return int(reply.split()[1]), reply


@pytest.mark.parametrize("target", [
    "/vod/../etc/passwd",
    "/vod/abc123/../../etc/passwd",
    "/vod/%2e%2e/etc/passwd",
    "/vod/abc123/%2E%2E/%2e%2e/x",
    "/vod/abc123/.%2e/x",
    "/vod/abc123%2f..%2fx",
    "/vod/abc123\\..\\x",
    "/vod/abc123/a%5cb",
    "/vod/abc123/a%00b",
    "/vod/.hidden",
    "/vod/",
    "/vod//x",
    "/vod/abc123/",
    "/sources/abc123/source",
    "/VOD/abc123/master.m3u8",
    "/etc/passwd",
    "/",
])
async def test_paths_outside_the_layout_are_404(client: TestClient, target: str) -> None:
    status, reply = await raw_status(client, target)
    assert status == 404
    assert b"application/problem+json" in reply
    assert b"Location:" not in reply


async def test_edge_failing_health_checks_is_avoided_then_rejoins(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    # One London edge fails its checks: London clients stay in eu-west, on the other edge.
    edges["eu1"].mode = "fail"
    eu2 = edges["eu2"].url + SEGMENT

    async def only_eu2() -> bool:
        return {(await steer(client, LONDON))[2] for _ in range(3)} == {eu2}
    await eventually(only_eu2)

    # The other one stops answering in time: London goes to the next nearest region.
    edges["eu2"].mode = "hang"
    await eventually(region_is(client, LONDON, "eu-central"))
    status, region, location = await steer(client, LONDON)
    assert (status, location) == (302, edges["fra"].url + SEGMENT)
    health = await (await client.get("/healthz")).json()
    assert health["status"] == "ok"
    assert health["regions"]["eu-west"] == {"edges": 2, "healthy_edges": 0}
    assert health["regions"]["eu-central"] == {"edges": 1, "healthy_edges": 1}
    text = await (await client.get("/metrics")).text()
    assert f'reel_geo_edge_healthy{{edge="{edges["eu1"].url}"}} 0.0' in text
    assert f'reel_geo_edge_healthy{{edge="{edges["fra"].url}"}} 1.0' in text

    # Back to health: after `rise` good probes London returns home.
    edges["eu1"].mode = edges["eu2"].mode = "ok"
    await eventually(region_is(client, LONDON, "eu-west"))
    text = await (await client.get("/metrics")).text()
    assert f'reel_geo_edge_healthy{{edge="{edges["eu1"].url}"}} 1.0' in text


async def test_edge_that_goes_away_is_avoided_then_rejoins(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    assert (await steer(client, SYDNEY))[1] == "ap-southeast"
    await edges["ap"].stop()
    # From Sydney, New York is nearer than Frankfurt or London.
    await eventually(region_is(client, SYDNEY, "us-east"))
    await edges["ap"].start()  # same port
    await eventually(region_is(client, SYDNEY, "ap-southeast"))


async def test_no_healthy_edge_is_503(client: TestClient, edges: dict[str, EdgeServer]) -> None:
    for edge in edges.values():
        edge.mode = "fail"

    async def unavailable() -> bool:
        return (await steer(client, LONDON))[0] == 503
    await eventually(unavailable)
    async with client.get(SEGMENT, allow_redirects=False) as resp:
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        body = await resp.json(content_type=None)
        assert body["status"] == 503 and body["title"] == "No healthy edge"
    async with client.get("/healthz") as resp:
        assert resp.status == 503
        assert (await resp.json())["status"] == "unavailable"
    text = await (await client.get("/metrics")).text()
    assert "reel_geo_no_healthy_edge_total 2.0" in text


async def test_healthz_and_metrics(client: TestClient) -> None:
    async with client.get("/healthz") as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {"status": "ok", "regions": {
        "eu-west": {"edges": 2, "healthy_edges": 2},
        "eu-central": {"edges": 1, "healthy_edges": 1},
        "us-east": {"edges": 1, "healthy_edges": 1},
        "ap-southeast": {"edges": 1, "healthy_edges": 1},
    }}
    await steer(client, LONDON)
    text = await (await client.get("/metrics")).text()
    for line in ('reel_geo_redirects_total{region="eu-west"} 1.0',
                 'reel_geo_redirects_total{region="ap-southeast"} 0.0',
                 "reel_geo_unknown_clients_total 0.0",
                 "reel_geo_no_healthy_edge_total 0.0",
                 "# TYPE reel_geo_edge_healthy gauge"):
        assert line in text


async def test_errors_are_problem_json(client: TestClient) -> None:
    async with client.post(SEGMENT) as resp:
        assert resp.status == 405
        assert resp.content_type == "application/problem+json"
        assert "GET" in resp.headers["Allow"]


async def test_edges_start_healthy_and_probes_stop_on_cleanup(tmp_path: Path) -> None:
    # Nothing listens on this edge: it is still chosen until the probes have had their say.
    edge = EdgeServer()
    await edge.start()
    await edge.stop()
    regions = tmp_path / "r.toml"
    regions.write_text(f'default = "x"\n[regions.x]\nlat = 0\nlon = 0\nedges = ["{edge.url}"]\n')
    app = geo.app.make_app(regions, None, [], probe_interval=5, probe_timeout=0.3)
    client = await start_geo(app)
    try:
        assert (await steer(client))[2] == edge.url + SEGMENT
        checker = app[geo.app.GEO_KEY].health
        assert checker.running
    finally:
        await client.close()
    assert not checker.running


async def test_bad_configuration_fails_before_serving(tmp_path: Path, regions_file: Path,
                                                      city_db: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('default = "eu-west"\n[regions.eu-west]\nlat = 100\nlon = 0\nedges = []\n')
    with pytest.raises(RegionsError, match=r"regions\.eu-west\.lat"):
        geo.app.make_app(bad)
    with pytest.raises(ConfigError, match="trusted proxy"):
        geo.app.make_app(regions_file, city_db, ["not-a-network"])
    country = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoIP2-Country")
    country.insert_network(IPSet(["81.2.69.0/24"]), {"country": {"iso_code": "GB"}})
    country.to_db_file(str(tmp_path / "country.mmdb"))
    with pytest.raises(ConfigError, match="needs a City database"):
        geo.app.make_app(regions_file, tmp_path / "country.mmdb")
