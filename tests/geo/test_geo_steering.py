"""HLS Content Steering over HTTP: a real geo app, real edge servers and a real City database.

What a player sees: the steered master (read with the m3u8 library, not our own parser), the
steering manifest for its address, and what changes when edges fail, come back or get busy.
"""

from __future__ import annotations

from pathlib import Path

import m3u8
import pytest
from aiohttp.test_utils import TestClient

import geo.app
from geo.health import HealthChecker
from geo.regions import Region, RegionMap
from geo.router import Router
from tests.geo.conftest import LONDON, SYDNEY, EdgeServer
from tests.geo.test_geo_app import FAST, eventually, raw_status, start_geo

VIDEO = "abc123"
MASTER_PATH = f"/vod/{VIDEO}/master.m3u8"
STEERED = f"/steer/vod/{VIDEO}/master.m3u8"
PACKAGED = b"""#EXTM3U
#EXT-X-VERSION:7
#EXT-X-INDEPENDENT-SEGMENTS
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Main",LANGUAGE="und",DEFAULT=YES,AUTOSELECT=YES,\
CHANNELS="2",URI="a128/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=900000,AVERAGE-BANDWIDTH=800000,CODECS="avc1.64001e,mp4a.40.2",\
RESOLUTION=640x360,FRAME-RATE=30.000,AUDIO="audio"
v360/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=300000,AVERAGE-BANDWIDTH=250000,CODECS="avc1.64000c,mp4a.40.2",\
RESOLUTION=256x144,FRAME-RATE=30.000,AUDIO="audio"
v144/index.m3u8
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=100000,CODECS="avc1.64001e",RESOLUTION=640x360,\
URI="v360/iframes.m3u8"
#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH=40000,CODECS="avc1.64000c",RESOLUTION=256x144,\
URI="v144/iframes.m3u8"
"""
# Nearest first from London; eu-west's second edge is a clone ("eu-west.2").
FROM_LONDON = ["eu-west", "eu-central", "us-east", "ap-southeast"]
KNOWN = "p=" + ",".join(FROM_LONDON)


@pytest.fixture
async def client(regions_file: Path, city_db: Path, edges: dict[str, EdgeServer]) -> TestClient:
    for edge in edges.values():
        edge.objects[MASTER_PATH] = PACKAGED
    client = await start_geo(geo.app.make_app(regions_file, city_db, ["127.0.0.1"], **FAST,
                                          steering_ttl=3))
    yield client
    await client.close()


async def get(client: TestClient, path: str, ip: str | None = LONDON):
    headers = {"X-Forwarded-For": ip} if ip else {}
    resp = await client.get(path, headers=headers, allow_redirects=False)
    await resp.read()
    return resp


async def manifest(client: TestClient, ip: str = LONDON, query: str = KNOWN) -> dict:
    resp = await get(client, f"/steer/vod/{VIDEO}/steering.json?{query}", ip)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    return await resp.json()


async def test_steered_master_has_one_pathway_per_region_nearest_first(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    resp = await get(client, STEERED)
    assert resp.status == 200
    assert resp.content_type == "application/vnd.apple.mpegurl"
    assert resp.headers["Cache-Control"] == "no-store"
    assert resp.headers["X-Reel-Region"] == "eu-west"
    text = await resp.text()
    master = m3u8.loads(text, uri=str(resp.url))
    assert master.content_steering.pathway_id == "eu-west"
    assert master.content_steering.absolute_uri == str(
        client.make_url(f"/steer/vod/{VIDEO}/steering.json?{KNOWN}"))

    base = {"eu-west": edges["eu1"].url, "eu-central": edges["fra"].url,
            "us-east": edges["us"].url, "ap-southeast": edges["ap"].url}
    pathways = list(dict.fromkeys(p.stream_info.pathway_id for p in master.playlists))
    assert pathways == FROM_LONDON
    for pathway in FROM_LONDON:
        variants = [p for p in master.playlists if p.stream_info.pathway_id == pathway]
        directory = f"{base[pathway]}/vod/{VIDEO}/"
        assert [v.uri for v in variants] == [directory + "v360/index.m3u8",
                                             directory + "v144/index.m3u8"]
        assert [v.stream_info.stable_variant_id for v in variants] == ["v360", "v144"]
        assert {v.stream_info.audio for v in variants} == {f"audio-{pathway}"}
        # Each Pathway's audio group holds renditions on that Pathway's edge only.
        audio = [m for m in master.media if m.group_id == f"audio-{pathway}"]
        assert [m.uri for m in audio] == [directory + "a128/index.m3u8"]
        iframes = [p for p in master.iframe_playlists
                   if p.iframe_stream_info.pathway_id == pathway]
        assert [p.uri for p in iframes] == [directory + "v360/iframes.m3u8",
                                            directory + "v144/iframes.m3u8"]
    assert len(master.media) == 4
    assert 'STABLE-RENDITION-ID="a128"' in text
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text and "#EXT-X-VERSION:7" in text

    # Sydney's master starts on its own region; the 302 for plain players is unchanged.
    sydney = m3u8.loads(await (await get(client, STEERED, SYDNEY)).text())
    assert sydney.content_steering.pathway_id == "ap-southeast"
    assert sydney.playlists[0].uri.startswith(edges["ap"].url)
    plain = await get(client, MASTER_PATH)
    assert plain.status == 302
    assert plain.headers["Location"] in (edges["eu1"].url + MASTER_PATH,
                                         edges["eu2"].url + MASTER_PATH)


async def test_master_is_fetched_once_and_cached(client: TestClient,
                                                 edges: dict[str, EdgeServer]) -> None:
    for _ in range(5):
        assert (await get(client, STEERED)).status == 200
        await manifest(client)
    asked = [path for edge in edges.values() for path in edge.requests]
    assert asked == [MASTER_PATH]


async def test_steering_manifest_orders_pathways_and_clones_extra_edges(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    doc = await manifest(client)
    assert doc["VERSION"] == 1 and doc["TTL"] == 3
    assert doc["PATHWAY-PRIORITY"] == ["eu-west", "eu-west.2", "eu-central", "us-east",
                                       "ap-southeast"]
    # The second London edge is not in the master: a clone, with every URI in full (the edges
    # differ by port, which a HOST replacement cannot say).
    eu2 = f"{edges['eu2'].url}/vod/{VIDEO}/"
    assert doc["PATHWAY-CLONES"] == [{
        "BASE-ID": "eu-west", "ID": "eu-west.2",
        "URI-REPLACEMENT": {
            "PER-VARIANT-URIS": {"v360": eu2 + "v360/index.m3u8", "v144": eu2 + "v144/index.m3u8",
                                 "v360-iframes": eu2 + "v360/iframes.m3u8",
                                 "v144-iframes": eu2 + "v144/iframes.m3u8"},
            "PER-RENDITION-URIS": {"a128": eu2 + "a128/index.m3u8"},
        },
    }]
    # Reloads name the clone as known, so it is not sent again.
    assert doc["RELOAD-URI"] == "steering.json?p=" + ",".join(FROM_LONDON + ["eu-west.2"])
    again = await manifest(client, query=doc["RELOAD-URI"].partition("?")[2]
                           + "&_HLS_pathway=eu-west&_HLS_throughput=5000000")
    assert again["PATHWAY-CLONES"] == []
    assert again["PATHWAY-PRIORITY"] == doc["PATHWAY-PRIORITY"]

    sydney = await manifest(client, SYDNEY)
    assert sydney["PATHWAY-PRIORITY"][0] == "ap-southeast"
    text = await (await client.get("/metrics")).text()
    assert 'reel_geo_steering_requests_total{pathway="eu-west"} 2.0' in text
    assert 'reel_geo_steering_requests_total{pathway="ap-southeast"} 1.0' in text


async def test_failing_edges_leave_the_priority_and_rejoin(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    edges["eu1"].mode = "fail"

    async def eu1_out() -> bool:
        return (await manifest(client))["PATHWAY-PRIORITY"][0] == "eu-west.2"
    await eventually(eu1_out)
    assert "eu-west" not in (await manifest(client))["PATHWAY-PRIORITY"]
    # A master made now starts on the London edge that works.
    master = m3u8.loads(await (await get(client, STEERED)).text())
    assert master.content_steering.pathway_id == "eu-west.2"
    assert master.playlists[0].uri.startswith(edges["eu2"].url)

    edges["eu2"].mode = "hang"

    async def london_down() -> bool:
        return (await manifest(client))["PATHWAY-PRIORITY"][0] == "eu-central"
    await eventually(london_down)
    # A region with no healthy edge goes last in a new master, so steering can bring it back.
    master = m3u8.loads(await (await get(client, STEERED)).text())
    order = list(dict.fromkeys(p.stream_info.pathway_id for p in master.playlists))
    assert order == ["eu-central", "us-east", "ap-southeast", "eu-west"]

    edges["eu1"].mode = edges["eu2"].mode = "ok"

    async def back() -> bool:
        return (await manifest(client))["PATHWAY-PRIORITY"][:2] == ["eu-west", "eu-west.2"]
    await eventually(back)


async def test_no_healthy_edge_is_503(client: TestClient, edges: dict[str, EdgeServer]) -> None:
    for edge in edges.values():
        edge.mode = "fail"

    async def down() -> bool:
        return (await get(client, STEERED)).status == 503
    await eventually(down)
    for path in (STEERED, f"/steer/vod/{VIDEO}/steering.json?{KNOWN}"):
        resp = await get(client, path)
        assert resp.status == 503
        assert resp.content_type == "application/problem+json"
        assert int(resp.headers["Retry-After"]) >= 1


async def test_load_breaks_ties_between_equally_near_edges(
        client: TestClient, edges: dict[str, EdgeServer]) -> None:
    edges["eu1"].load, edges["eu2"].load = 50, 3

    async def eu2_first() -> bool:
        return (await manifest(client))["PATHWAY-PRIORITY"][:2] == ["eu-west.2", "eu-west"]
    await eventually(eu2_first)
    # Plain players too: the less loaded London edge, never a farther region.
    locations = {(await get(client, MASTER_PATH)).headers["Location"] for _ in range(5)}
    assert locations == {edges["eu2"].url + MASTER_PATH}
    edges["eu1"].load, edges["eu2"].load = 0, 80

    async def eu1_first() -> bool:
        return (await manifest(client))["PATHWAY-PRIORITY"][:2] == ["eu-west", "eu-west.2"]
    await eventually(eu1_first)


def test_clients_sent_since_the_last_probe_count_as_load() -> None:
    regions = RegionMap({"eu": Region("eu", 51.5, 0.0, ("http://a", "http://b"))}, "eu")
    checker = HealthChecker(regions.edges)
    checker.report_load("http://a", b'{"load": {"connections": 2}}')
    checker.report_load("http://b", b'{"status": "ok"}')  # reports nothing: idle
    router = Router(regions)
    picks = []
    for _ in range(6):
        edge = router.route(None, checker.is_healthy, checker.load).edge
        checker.assign(edge)
        picks.append(edge)
    # b until it has had as many new clients as a had connections, then they share.
    assert picks[:2] == ["http://b", "http://b"]
    assert sorted(picks[2:]) == ["http://a", "http://a", "http://b", "http://b"]
    for body in (b"not json", b'{"load": {"connections": -1}}', b'{"load": {"connections": true}}',
                 b'{"load": 7}', b"[]"):
        checker.report_load("http://a", body)
        assert checker.load("http://a") == 0


def test_a_node_that_passes_once_after_failing_stays_out_until_rise() -> None:
    regions = RegionMap({"eu": Region("eu", 51.5, 0.0, ("http://a", "http://b"))}, "eu")
    checker = HealthChecker(regions.edges, fall=2, rise=3)
    router = Router(regions)
    for ok in (False, False):
        checker.record("http://a", ok)
    for ok in (True, False, True, True):  # flapping: never `rise` passes in a row
        checker.record("http://a", ok)
        assert router.order(None, checker.is_healthy) == ["http://b"]
        assert {router.route(None, checker.is_healthy).edge for _ in range(3)} == {"http://b"}
    checker.record("http://a", True)  # the third in a row
    assert router.order(None, checker.is_healthy) == ["http://a", "http://b"]


@pytest.mark.parametrize("query", [
    "",
    "p=",
    "p=eu-west,,us-east",
    "p=eu%20west",
    "p=eu-west&p=us-east",
    "p=" + ",".join(f"x{i}" for i in range(300)),
    "p=" + "x" * 65,
    f"{KNOWN}&_HLS_pathway=%3Cscript%3E",
    f"{KNOWN}&_HLS_throughput=fast",
    f"{KNOWN}&_HLS_throughput=-5",
    f"{KNOWN}&_HLS_throughput=1e9",
    f"{KNOWN}&_HLS_throughput=" + "9" * 40,
    f"{KNOWN}&_HLS_pathway=a&_HLS_pathway=b",
])
async def test_bad_steering_queries_are_400(client: TestClient, query: str) -> None:
    resp = await get(client, f"/steer/vod/{VIDEO}/steering.json?{query}")
    assert resp.status == 400
    assert resp.content_type == "application/problem+json"
    body = await resp.json(content_type=None)
    assert body["status"] == 400 and body["detail"]


async def test_unknown_pathways_and_parameters_are_tolerated(client: TestClient) -> None:
    # A master from before a region was removed, and a player's cache buster.
    doc = await manifest(client, query="p=eu-west,mars,ap-southeast&nocache=123")
    assert "mars" not in doc["PATHWAY-PRIORITY"]
    assert doc["PATHWAY-PRIORITY"][0] == "eu-west"
    assert {c["ID"] for c in doc["PATHWAY-CLONES"]} == {"eu-west.2", "eu-central", "us-east"}
    assert {c["BASE-ID"] for c in doc["PATHWAY-CLONES"]} == {"eu-west"}


@pytest.mark.parametrize("path", [
    "/steer/vod/short/master.m3u8",
    "/steer/vod/abc123/index.m3u8",
    "/steer/sources/abc123/master.m3u8",
    "/steer/vod/abc%2e%2e/master.m3u8",
    "/steer/vod/abc123/../abc123/master.m3u8",
    "/steer/vod/abc123/%2e%2e/abc123/steering.json?p=eu-west",
    "/steer/",
])
async def test_paths_outside_the_steering_space_are_404(client: TestClient, path: str,
                                                        edges: dict[str, EdgeServer]) -> None:
    status, reply = await raw_status(client, path)  # byte for byte: no client normalises `..`
    assert status == 404
    assert b"application/problem+json" in reply
    assert not any(edge.requests for edge in edges.values())


async def test_unknown_video_is_404_and_remembered(client: TestClient,
                                                  edges: dict[str, EdgeServer]) -> None:
    for path in ("/steer/vod/nosuchvideo/master.m3u8",
                 f"/steer/vod/nosuchvideo/steering.json?{KNOWN}"):
        resp = await get(client, path)
        assert resp.status == 404
        assert (await resp.json(content_type=None))["title"] == "Unknown video"
    assert sum(len(edge.requests) for edge in edges.values()) == 1


@pytest.mark.parametrize("body", [
    b"<html>oops</html>",
    b"#EXTM3U\n#EXT-X-TARGETDURATION:6\n#EXTINF:6,\nseg_00001.m4s\n",
    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nhttp://elsewhere.example/x.m3u8\n",
    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n../../other/index.m3u8\n",
    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1,CODECS=\"unterminated\nv1/index.m3u8\n",
    b"#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\n",
    b"\xff\xfe",
    b"#EXTM3U\n" + b"#" * 300_000,
])
async def test_a_master_we_cannot_steer_is_502(client: TestClient, edges: dict[str, EdgeServer],
                                               body: bytes) -> None:
    for edge in edges.values():
        edge.objects[MASTER_PATH] = body
    resp = await get(client, STEERED)
    assert resp.status == 502
    assert resp.content_type == "application/problem+json"
    assert int(resp.headers["Retry-After"]) >= 1


async def test_forged_forwarded_for_does_not_steer(regions_file: Path, city_db: Path,
                                                   edges: dict[str, EdgeServer]) -> None:
    for edge in edges.values():
        edge.objects[MASTER_PATH] = PACKAGED
    # Nobody is a trusted proxy: a client claiming Sydney is the loopback address it is.
    client = await start_geo(geo.app.make_app(regions_file, city_db, [], **FAST))
    try:
        doc = await manifest(client, SYDNEY)
        assert doc["PATHWAY-PRIORITY"][0] == "us-east"  # the default region
        master = m3u8.loads(await (await get(client, STEERED, SYDNEY)).text())
        assert master.content_steering.pathway_id == "us-east"
    finally:
        await client.close()


@pytest.mark.parametrize("address", ["10.1.2.3", "192.168.0.9", "169.254.1.1", "240.0.0.1",
                                     "::1", "fd00::5", "2001:db8::1", "8.8.8.8", "not-an-ip", ""])
async def test_unplaceable_addresses_steer_from_the_default_region(
        client: TestClient, address: str) -> None:
    doc = await manifest(client, address or None)
    assert doc["PATHWAY-PRIORITY"][0] == "us-east"
