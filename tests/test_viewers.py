"""reel.viewers: distinct viewers per live stream over a window, the sketches of the nodes below,
the header that carries them upstream; one viewer seen at two nodes counts once; bounded, and
tolerant of a malformed header."""

from __future__ import annotations

import random

from reel.viewers import HEADER, LISTED, Sketch, Viewers, parse, video_of, viewer_hash, viewer_of

KEY = "live/stream01/v240/index.m3u8"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _report(node: Viewers) -> str:
    return node.upstream_headers(KEY)[HEADER]


def test_distinct_viewers_within_the_window_with_the_nodes_below() -> None:
    clock = Clock()
    edge = Viewers("eu.a", window=10, clock=clock)
    sibling = Viewers("eu.b", window=10, clock=clock)
    for _ in range(3):  # a player reloads: one viewer
        edge.request(KEY, 'br=800,sid="p1"', "10.0.0.1", "ua", None)
    edge.request(KEY, ',sid="p2"', "10.0.0.1", "ua", None)
    edge.request(KEY, None, "10.0.0.2", "ua", None)
    edge.request(KEY, None, "10.0.0.2", "other-ua", None)
    assert edge.total("stream01") == 4
    # The sibling worker has p2 too (another connection of the same player) and two of its own.
    for sid in ("p2", "p3", "p4"):
        sibling.request(KEY, f'sid="{sid}"', "10.0.0.3", "ua", None)
    edge.request(KEY, None, "10.0.0.9", None, _report(sibling))
    assert edge.total("stream01") == 6  # p2 once
    own = _report(edge)
    assert own.startswith("eu.a=s")
    edge.request(KEY, None, "10.0.0.9", None, own)  # our own name coming back: ignored
    assert edge.total("stream01") == 6
    ingest = Viewers("ingest", window=10, clock=clock)
    ingest.request("/" + KEY, None, "10.0.0.9", None, own)
    ingest.request("/" + KEY, None, "10.0.0.9", None, _report(sibling))  # heard twice: once
    assert ingest.total("stream01") == 6
    assert edge.upstream_headers("vod/stream01/master.m3u8") == {}

    clock.now = 6
    edge.request(KEY, ',sid="p1"', "10.0.0.1", "ua", None)
    sibling = Viewers("eu.b", window=10, clock=clock)
    sibling.request(KEY, 'sid="p5"', "10.0.0.3", "ua", None)
    edge.request(KEY, None, "10.0.0.9", None, _report(sibling))  # the newest sketch replaces
    clock.now = 12  # the others were last seen at 0: gone
    assert edge.total("stream01") == 2
    clock.now = 30
    assert edge.total("stream01") == 0 and edge.upstream_headers(KEY) == {HEADER: ""}


def test_a_sketch_passed_round_a_loop_of_siblings_still_expires() -> None:
    clock = Clock()
    a, b = Viewers("eu.a", window=10, clock=clock), Viewers("eu.b", window=10, clock=clock)
    a.request(KEY, 'sid="p1"', "10.0.0.1", "ua", None)  # seen once, at a
    for t in range(0, 30):  # a and b relay to each other (each owns some of the stream's keys)
        clock.now = t
        b.request(KEY, None, "10.0.0.9", None, a.upstream_headers(KEY).get(HEADER))
        a.request(KEY, None, "10.0.0.9", None, b.upstream_headers(KEY).get(HEADER))
        # gone from a after the window; from b once a's last sketch with it is a window old
        assert (a.total("stream01"), b.total("stream01")) == (
            (1, 1) if t <= 10 else (0, 1) if t <= 20 else (0, 0)), t
    a.heard("stream01", f"eu.b={Sketch([5]).encode()};3000")
    a.heard("stream01", f"eu.b={Sketch([6, 7]).encode()};4000")  # older than the one kept
    assert a.total("stream01") == 1


def test_a_big_audience_is_counted_within_a_few_percent_in_a_small_header() -> None:
    clock = Clock()
    rng = random.Random(7)
    people = [f"sid:{rng.getrandbits(64):x}" for _ in range(20_000)]
    workers = [Viewers(f"eu.w{n}", clock=clock) for n in range(2)]
    for person in people:  # everyone at worker 0, a third of them at worker 1 as well
        workers[0].seen("stream01", person)
    for person in people[::3]:
        workers[1].seen("stream01", person)
    workers[0].request(KEY, None, "10.0.0.9", None, _report(workers[1]))
    header = _report(workers[0])
    assert len(header) < 2 * 1400  # a KiB or so per node, however many watch
    counted = Viewers("ingest", clock=clock)
    counted.heard("stream01", header)
    assert abs(counted.total("stream01") - len(people)) < 0.06 * len(people)


def test_sketches_merge_as_sets() -> None:
    few = Sketch(viewer_hash(f"v{n}") for n in range(LISTED))
    assert few.count() == LISTED and Sketch.decode(few.encode()).count() == LISTED  # type: ignore[union-attr]
    same = Sketch(viewer_hash(f"v{n}") for n in range(LISTED // 2))
    few.merge(same)
    assert few.count() == LISTED  # listed hashes: exact
    many = Sketch(viewer_hash(f"w{n}") for n in range(5000))
    many.merge(few)  # registers and a list
    assert abs(many.count() - (5000 + LISTED)) < 0.06 * 5000
    few.merge(many)  # a list and registers
    assert few.count() == many.count()


def test_bounded_and_tolerant() -> None:
    viewers = Viewers("n", max_streams=2, max_viewers=3, max_nodes=2, clock=Clock())
    for n in range(5):
        viewers.seen("stream01", f"v{n}")
    assert viewers.total("stream01") == 3
    for video in ("stream02", "stream03"):
        viewers.seen(video, "v")
    assert viewers.total("stream01") == 0  # the oldest stream went
    one = Sketch([1]).encode()
    viewers.heard("stream03", f"a={one};0, b={Sketch([2]).encode()};0, c={Sketch([3]).encode()};5")
    assert viewers.total("stream03") == 3  # v, and the newest two nodes (b, c)
    registers = Sketch(range(LISTED + 1)).encode()
    assert set(parse(f"x={one};0, bad, ={one};0, y=7, n={one}, z=s!!;0, w=d{registers[1:10]};0, "
                     f"v={registers};12,")) == {"x", "v"}
    assert video_of("/live/abc123/v240/part_00001_0.m4s") == "abc123"
    assert video_of("vod/abc123/master.m3u8") is None and video_of("live/x/y") is None
    assert viewer_of('sid="s"', "1.2.3.4", "ua") == "sid:s"
    assert viewer_of("br=3", "1.2.3.4", "ua") == "1.2.3.4|ua"
