"""reel.viewers: distinct viewers per live stream over a window, the counts of the nodes below,
the header that carries them upstream; bounded, and tolerant of a malformed header."""

from __future__ import annotations

from reel.viewers import HEADER, Viewers, parse, video_of, viewer_of


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_distinct_viewers_within_the_window_with_the_nodes_below() -> None:
    clock = Clock()
    edge = Viewers("eu.a", window=10, clock=clock)
    key = "live/stream01/v240/index.m3u8"
    for _ in range(3):  # a player reloads: one viewer
        edge.request(key, 'br=800,sid="p1"', "10.0.0.1", "ua", None)
    edge.request(key, ',sid="p2"', "10.0.0.1", "ua", None)
    edge.request(key, None, "10.0.0.2", "ua", None)
    edge.request(key, None, "10.0.0.2", "other-ua", None)
    edge.request(key, None, "10.0.0.9", None, "eu.b=7, eu.c=2, eu.a=99")  # our own name: ignored
    assert edge.counts("stream01") == {"eu.a": 4, "eu.b": 7, "eu.c": 2}
    assert edge.upstream_headers(key) == {HEADER: "eu.a=4, eu.b=7, eu.c=2"}
    assert edge.upstream_headers("vod/stream01/master.m3u8") == {}
    clock.now = 6
    edge.request(key, ',sid="p1"', "10.0.0.1", "ua", None)
    edge.request(key, None, "10.0.0.9", None, "eu.b=5")
    clock.now = 12  # the others were last seen at 0: gone
    assert edge.counts("stream01") == {"eu.a": 1, "eu.b": 5}
    clock.now = 30
    assert edge.total("stream01") == 0 and edge.upstream_headers(key) == {}


def test_bounded_and_tolerant() -> None:
    viewers = Viewers("n", max_streams=2, max_viewers=3, max_nodes=2, clock=Clock())
    for n in range(5):
        viewers.seen("stream01", f"v{n}")
    assert viewers.total("stream01") == 3
    for video in ("stream02", "stream03"):
        viewers.seen(video, "v")
    assert viewers.total("stream01") == 0  # the oldest stream went
    viewers.heard("stream03", "a=1, b=2, c=3")
    assert viewers.counts("stream03") == {"n": 1, "b": 2, "c": 3}
    assert parse("x=1, bad, =3, y=-2, z=12345678901, w=4,") == {"x": 1, "w": 4}
    assert video_of("/live/abc123/v240/part_00001_0.m4s") == "abc123"
    assert video_of("vod/abc123/master.m3u8") is None and video_of("live/x/y") is None
    assert viewer_of('sid="s"', "1.2.3.4", "ua") == "sid:s"
    assert viewer_of("br=3", "1.2.3.4", "ua") == "1.2.3.4|ua"
