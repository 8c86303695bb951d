"""The player's playlist reading (plain and content-steered masters) and the popularity model."""

from __future__ import annotations

import argparse
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from loadtest.hls import parse_master, parse_media
from loadtest.popularity import Catalog, Hotspot
from reel import loadtest as loadtest_cli

PLAIN = """#EXTM3U
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Main",DEFAULT=YES,URI="a128/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=3421272,CODECS="avc1.64001f,mp4a.40.2",RESOLUTION=1280x720,AUDIO="audio"
v720/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=589532,CODECS="avc1.4d4015,mp4a.40.2",RESOLUTION=426x240,AUDIO="audio"
v240/index.m3u8
"""

STEERED = """#EXTM3U
#EXT-X-CONTENT-STEERING:SERVER-URI="/steer/abc?x=1",PATHWAY-ID="ap-southeast"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio-eu",NAME="Main",DEFAULT=YES,URI="http://eu:1/vod/abc/a128/index.m3u8"
#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio-ap",NAME="Main",DEFAULT=YES,URI="http://ap:2/vod/abc/a128/index.m3u8"
#EXT-X-STREAM-INF:BANDWIDTH=900000,AUDIO="audio-eu",PATHWAY-ID="eu-west"
http://eu:1/vod/abc/v360/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO="audio-eu",PATHWAY-ID="eu-west"
http://eu:1/vod/abc/v240/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=900000,AUDIO="audio-ap",PATHWAY-ID="ap-southeast"
http://ap:2/vod/abc/v360/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=500000,AUDIO="audio-ap",PATHWAY-ID="ap-southeast"
http://ap:2/vod/abc/v240/index.m3u8
"""


def test_plain_master_resolves_against_the_edge_it_came_from() -> None:
    master = parse_master(PLAIN, "http://edge:8410/vod/abc/master.m3u8")
    assert [v.uri for v in master.variants] == ["http://edge:8410/vod/abc/v240/index.m3u8",
                                                "http://edge:8410/vod/abc/v720/index.m3u8"]
    assert master.audio_for(master.variants[0]) == "http://edge:8410/vod/abc/a128/index.m3u8"


def test_steered_master_is_read_as_its_first_pathway() -> None:
    master = parse_master(STEERED, "http://geo:8400/vod/abc/master.m3u8")
    assert [(v.bandwidth, v.uri) for v in master.variants] == [
        (500000, "http://ap:2/vod/abc/v240/index.m3u8"), (900000, "http://ap:2/vod/abc/v360/index.m3u8")]
    assert master.audio_for(master.variants[1]) == "http://ap:2/vod/abc/a128/index.m3u8"
    # Without a steering tag naming the initial pathway, the first one listed.
    without_tag = "\n".join(line for line in STEERED.splitlines() if "CONTENT-STEERING" not in line)
    assert {v.pathway for v in parse_master(without_tag, "http://geo/").variants} == {"eu-west"}


def test_media_playlist() -> None:
    media = parse_media('#EXTM3U\n#EXT-X-MAP:URI="init.mp4"\n#EXTINF:6.000,\nseg_00001.m4s\n'
                        "#EXTINF:2.5,\nseg_00002.m4s\n#EXT-X-ENDLIST\n", "http://e/vod/abc/v240/index.m3u8")
    assert media.init == "http://e/vod/abc/v240/init.mp4"
    assert [s.uri.rsplit("/", 1)[1] for s in media.segments] == ["seg_00001.m4s", "seg_00002.m4s"]
    assert media.duration == 8.5


def test_zipf_ranks_and_the_hotspot() -> None:
    videos = [f"video{i:03d}" for i in range(50)]
    catalog = Catalog(videos, exponent=1.1, seed=3)
    rng = random.Random(1)
    picks = Counter(catalog.pick(rng, 0.0) for _ in range(20000))
    ranked = [v for v, _ in picks.most_common()]
    assert ranked[0] == catalog.steady[0] and picks[catalog.steady[0]] > 3 * picks[catalog.steady[9]]
    catalog.make_hot(Hotspot(at=10.0, share=0.8, rise=2.0, half_life=5.0))
    assert catalog.hot == "video049"
    assert all(catalog.pick(rng, 9.9) != "video049" for _ in range(2000))  # not posted yet
    at_peak = sum(catalog.pick(rng, 12.0) == "video049" for _ in range(4000)) / 4000
    later = sum(catalog.pick(rng, 22.0) == "video049" for _ in range(4000)) / 4000
    assert 0.75 < at_peak < 0.85 and 0.15 < later < 0.25  # two half-lives on: a quarter of it


def test_seeded_viewers_are_handed_out_in_turn(tmp_path: Path) -> None:
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps({"videos": ["v1", "v2"], "viewers": ["t1", "t2", "t3"]}))
    catalog = Catalog.load(str(path), None)
    handed = [catalog.viewer() for _ in range(6)]
    assert sorted(handed[:3]) == ["t1", "t2", "t3"] and handed[3:] == handed[:3]
    path.write_text(json.dumps({"videos": ["v1"]}))  # a catalog seeded before viewers were
    assert Catalog.load(str(path), None).viewer() is None
    assert Catalog.load(None, "v1,v2").viewer() is None


def _locust_args(**given: object) -> argparse.Namespace:
    defaults = dict(suite="steady", users=200, duration="30s", spawn_rate=None, port_base=8400,
                    host=None, control=None, data=Path("d"), out=Path("o"), processes=0, extra=[])
    return argparse.Namespace(**{**defaults, **given})


def _spawn_rate(cmd: list[str]) -> float:
    return float(cmd[cmd.index("--spawn-rate") + 1])


def test_reel_loadtest_brings_every_user_within_seconds_unless_told() -> None:
    # Locust's own default (1 user/s) would take 200 s to bring 200 users into a 30 s run
    assert _spawn_rate(loadtest_cli.command_line(_locust_args())) == pytest.approx(200 / 3)
    assert _spawn_rate(loadtest_cli.command_line(_locust_args(duration="5m", users=50))) == 10
    assert _spawn_rate(loadtest_cli.command_line(_locust_args(spawn_rate=2.5))) == 2.5
    assert loadtest_cli.seconds("1h30m") == 5400 and loadtest_cli.seconds("90") == 90
    with pytest.raises(SystemExit, match="not like"):
        loadtest_cli.command_line(_locust_args(duration="soon"))
