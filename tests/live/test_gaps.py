"""Parts are cut by media time: publishers that drop pictures (a starved camera), send 25, 29.97
or 60 pictures a second, or vary their rhythm (OBS on a busy machine) still get parts no longer
than PART-TARGET, whole segments starting on an IDR aligned on every rung, and no hole in the
timeline. A client walks each rendition part by part with blocking reloads, checks every
playlist tag by tag, keeps every part's bytes; ffprobe then reads them back."""

from __future__ import annotations

import contextlib
import random
import re
import threading
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import pytest
from playwright.sync_api import Page
from prometheus_client import CollectorRegistry

from packager.live.config import AAC_FRAME, AUDIO_RATE
from packager.live.encode import LiveMetrics
from packager.live.stream import LiveStream
from tests.live.rig import TEST_CONFIG, LiveRig, demuxed, running, timed_clip
from tests.media import ffprobe_json
from tests.player import player_page, start_playing

SECONDS = 6.0
VIDEOS = ["v360", "v240"]
RENDITIONS = [*VIDEOS, "a128"]


def every(rate: Fraction, skip: range = range(0), period: float = 2.0,
          seconds: float = SECONDS) -> list[float]:
    """Picture times at `rate` for `seconds`, without those whose number within each `period`
    falls in `skip` (a camera starved for a moment, every `period` seconds)."""
    per_period = round(period * rate)
    return [float(n / rate) for n in range(round(seconds * rate)) if n % per_period not in skip]


def variable() -> list[float]:
    """OBS on a busy machine: steady at first, then frame times jitter by up to 8 ms, pictures
    go missing in ones, twos and a run of 0.6 s (two whole parts), and bursts come twice as
    fast."""
    rng, times, at = random.Random(7), [], 0.0
    while at < SECONDS:
        times.append(round(at, 3))
        if len(times) < 10:
            at += 1 / 30
        elif len(times) == 80:
            at += 0.6
        else:
            at += rng.choice([1 / 30] * 6 + [2 / 30, 3 / 30, 1 / 60]) + rng.uniform(-0.004, 0.004)
    return times


SOURCES = {
    # 10 pictures skipped every 2 s, and a whole second missing across segment 3's start.
    "dropped30": [t for t in every(Fraction(30), range(45, 55)) if not 2.8 < t < 3.75],
    "pal25": every(Fraction(25), range(30, 40)),
    "ntsc2997": every(Fraction(30000, 1001), range(20, 30)),
    "p60": every(Fraction(60), range(100, 110)),
    "vfr": variable(),
    # A publisher that changes its rate mid-stream: 2 s at 30, 2 s at 60, 2 s at 15.
    "rate_change": [n / 30 for n in range(60)] + [2 + n / 60 for n in range(120)]
    + [4 + n / 15 for n in range(30)],
}
live = contextlib.contextmanager(running)  # a published, served stream, stopped on the way out
RATES = {"dropped30": Fraction(30), "pal25": Fraction(25), "ntsc2997": Fraction(30000, 1001),
         "p60": Fraction(60), "vfr": Fraction(30), "rate_change": Fraction(30)}


@dataclass
class Listed:
    """What a rendition's playlists said, over the whole stream."""

    part_target: float = 0.0
    target: int = 0
    parts: dict[str, tuple[float, bool]] = field(default_factory=dict)  # uri: (duration, independent)
    bodies: dict[str, bytes] = field(default_factory=dict)
    segments: dict[int, tuple[float, list[str]]] = field(default_factory=dict)  # msn: (EXTINF, parts)
    playlists: int = 0


def attrs(line: str) -> dict[str, str]:
    return {k: v.strip('"') for k, v in re.findall(r'([A-Z-]+)=("[^"]*"|[^,]*)', line.partition(":")[2])}


def check_playlist(text: str, name: str, listed: Listed) -> tuple[int, int] | None:
    """Every tag of one playlist; returns the preload hint's (msn, part), None at the end."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U"
    head = {line.partition(":")[0]: line for line in lines if line.startswith("#EXT-X-")}
    target = int(head["#EXT-X-TARGETDURATION"].partition(":")[2])
    part_target = float(attrs(head["#EXT-X-PART-INF"])["PART-TARGET"])
    assert (listed.target or target, listed.part_target or part_target) == (target, part_target)
    listed.target, listed.part_target = target, part_target
    msn = int(head["#EXT-X-MEDIA-SEQUENCE"].partition(":")[2])
    parts: list[tuple[str, float, bool]] = []
    hint = None
    for line in lines:
        tag = line.partition(":")[0]
        if tag == "#EXT-X-PART":
            a = attrs(line)
            duration, independent = float(a["DURATION"]), a.get("INDEPENDENT") == "YES"
            # Numbered on, within this segment, from 0.
            assert a["URI"] == f"part_{msn:05d}_{len(parts)}.m4s", (name, a["URI"], msn, parts)
            assert 0 < duration <= part_target, (name, line, part_target)
            assert listed.parts.setdefault(a["URI"], (duration, independent)) == (
                duration, independent), (name, line)  # the same in every playlist
            parts.append((a["URI"], duration, independent))
        elif tag == "#EXTINF":
            extinf = float(line.partition(":")[2].rstrip(","))
            assert round(extinf) <= target, (name, line)
            if parts:
                assert extinf == pytest.approx(sum(d for _, d, _ in parts), abs=6e-5), (name, msn)
                assert listed.segments.setdefault(msn, (extinf, [u for u, _, _ in parts])) == (
                    extinf, [u for u, _, _ in parts])
        elif line.startswith("seg_"):
            assert line == f"seg_{msn:05d}.m4s", (name, line)  # the media sequence, continuous
            msn, parts = msn + 1, []
        elif tag == "#EXT-X-PRELOAD-HINT":
            hint = tuple(map(int, re.fullmatch(r'.*URI="part_(\d+)_(\d+)\.m4s"', line).groups()))
            assert hint == (msn, len(parts)), (name, line)  # the very next part
    listed.playlists += 1
    assert (hint is None) == ("#EXT-X-ENDLIST" in head), name
    return hint  # type: ignore[return-value]


def walk(rig: LiveRig, name: str, listed: Listed, failures: list[BaseException]) -> None:
    """A player at the live edge: a blocking reload for every next part, every new part fetched."""
    try:
        msn, part, late = 0, 0, 0
        while True:
            status, _, body = rig.get(f"{name}/index.m3u8?_HLS_msn={msn}&_HLS_part={part}", 30)
            if status == 503 and late < 10:  # a starved machine: three target durations passed
                late += 1
                continue
            assert status == 200, (name, status, body)
            hint = check_playlist(body.decode(), name, listed)
            for uri in listed.parts.keys() - listed.bodies.keys():
                status, _, data = rig.get(f"{name}/{uri}")
                assert status == 200, (name, uri, status)
                listed.bodies[uri] = data
            if hint is None:
                return
            msn, part = hint
    except BaseException as exc:
        failures.append(exc)


def probe_parts(init: bytes, listed: Listed, tmp: Path, name: str) -> list[tuple[float, float, bool]]:
    """(start, end, starts on a keyframe) of every part in order, as ffprobe reads the parts
    joined: its packets assigned to parts by their byte position."""
    uris = [u for _, (_, us) in sorted(listed.segments.items()) for u in us]
    path = tmp / f"{name}.mp4"
    path.write_bytes(init + b"".join(listed.bodies[u] for u in uris))
    packets = ffprobe_json("-show_entries", "packet=pts_time,duration_time,flags,pos",
                           str(path))["packets"]
    ends, offset = [], len(init)
    for u in uris:
        offset += len(listed.bodies[u])
        ends.append(offset)
    spans: list[list[dict]] = [[] for _ in uris]
    for p in packets:
        spans[next(i for i, end in enumerate(ends) if int(p["pos"]) < end)].append(p)
    out = []
    for uri, span in zip(uris, spans, strict=True):
        assert span, (name, uri)  # no part is empty of media
        out.append((float(span[0]["pts_time"]), "K" in span[0]["flags"]))
        if name in VIDEOS:
            assert not any("K" in p["flags"] for p in span[1:]), (name, uri)
    # A part ends where the next begins (ffprobe's own packet durations are no help here: it
    # reads the duration of a fragment's last sample from elsewhere than its trun).
    last = spans[-1][-1]
    ends = [start for start, _ in out[1:]] + [float(last["pts_time"]) + float(last["duration_time"])]
    return [(start, end, key) for (start, key), end in zip(out, ends, strict=True)]


@pytest.mark.parametrize("source", list(SOURCES))
def test_parts_never_outlast_their_target(source: str, tmp_path: Path) -> None:
    times = SOURCES[source]
    rate = RATES[source]
    clip = demuxed(timed_clip(tmp_path / "clip.mp4", times, rate))
    with live(clip, tmp_path / "store") as rig:
        listed = {name: Listed() for name in RENDITIONS}
        failures: list[BaseException] = []
        walkers = [threading.Thread(target=walk, args=(rig, name, listed[name], failures))
                   for name in RENDITIONS]
        for walker in walkers:
            walker.start()
        rig.wait_published()
        for walker in walkers:
            walker.join(60)
        assert not failures, failures
        assert not any(walker.is_alive() for walker in walkers)  # each saw the ENDLIST
        starts: dict[str, list[float]] = {}
        cadence = rig.stream.cadence
        # Millisecond times tell 29.97 from 30 (60 from 59.94) only after a thousand pictures:
        # whichever grid is taken, the publisher's pictures go to the slots nearest their times.
        assert cadence is not None and abs(cadence.frame_rate / rate - 1) < 0.002
        grid = cadence.frame_rate
        for name in RENDITIONS:
            got = listed[name]
            assert got.target == 1 and got.part_target == pytest.approx(cadence.part_target)
            final = (rig.store / "live" / rig.video_id / name / "index.m3u8").read_text()
            segments = re.findall(r"seg_(\d+)\.m4s", final)
            assert [int(s) for s in segments] == sorted(got.segments) == list(range(len(segments)))
            # Each segment is its parts end to end, byte for byte.
            for msn, (_, uris) in got.segments.items():
                segment = (rig.store / "live" / rig.video_id / name / f"seg_{msn:05d}.m4s")
                assert b"".join(got.bodies[u] for u in uris) == segment.read_bytes(), (name, msn)
            init = rig.get(f"{name}/init.mp4")[2]
            spans = probe_parts(init, got, tmp_path, name)
            uris = [u for _, (_, us) in sorted(got.segments.items()) for u in us]
            lasts = {us[-1] for _, us in got.segments.values()}
            for n, (uri, (start, end, key)) in enumerate(zip(uris, spans, strict=True)):
                duration, independent = got.parts[uri]
                # ffprobe reads what EXT-X-PART says, within a tick of rounding.
                assert end - start == pytest.approx(duration, abs=1e-4), (name, uri, start, end)
                assert end - start <= got.part_target + 1e-4, (name, uri)
                assert key == independent, (name, uri)
                # Where the playlist's durations put it: no hole, no overlap, before or after.
                assert start == pytest.approx(spans[0][0] + sum(got.parts[u][0] for u in uris[:n]),
                                              abs=1e-4), (name, uri)
                if uri not in lasts and not (name == "a128" and n == 0):
                    assert duration >= 0.85 * got.part_target, (name, uri, duration)
            firsts = [got.parts[us[0]][1] for _, (_, us) in sorted(got.segments.items())]
            if name in VIDEOS:
                assert all(firsts), (name, firsts)  # every segment starts on an IDR
                # Pictures where the publisher put them; where it put none, a part's start.
                slots = {round(round(t * 1000) / 1000 * grid) for t in times}
                part_starts = {n * cadence.part_frames for n in range(len(uris))}
                packets = ffprobe_json("-show_entries", "packet=pts_time", str(tmp_path / f"{name}.mp4"))
                shown = {round(Fraction(p["pts_time"]) * grid) for p in packets["packets"]}
                assert shown <= slots | part_starts and part_starts <= shown, (
                    name, sorted(shown - slots - part_starts), sorted(part_starts - shown))
            starts[name] = [s for s, _, _ in spans]
            assert spans[-1][1] == pytest.approx(times[-1] + 1 / float(rate), abs=0.05)
        # Every rung's parts start together; the sound's within an AAC frame of them.
        assert starts["v360"] == starts["v240"]
        assert len(starts["a128"]) >= len(starts["v360"]) - 1
        for audio_start in starts["a128"][1:]:  # the first: wherever the sound began
            assert min(abs(audio_start - s) for s in starts["v360"]) <= AAC_FRAME / AUDIO_RATE, (
                audio_start)


async def test_a_clock_jump_is_taken_out_not_filled(tmp_path: Path) -> None:
    """A publisher whose clock leaps a minute ahead mid-stream (fed as fast as it comes): the
    stream goes on from where it was, no minute of a frozen picture, no part too long."""
    clip = demuxed(timed_clip(tmp_path / "clip.mp4", every(Fraction(30))[:120], Fraction(30)))
    leap = 60_000
    packets = [replace(p, dts=p.dts + leap, pts=p.pts + leap) if p.dts >= 2000 else p
               for p in clip.packets]
    metrics = LiveMetrics(CollectorRegistry())
    metrics.forget = lambda *_: None  # type: ignore[method-assign]  # read it after the end
    stream = LiveStream("jump0001", config=TEST_CONFIG, metrics=metrics)
    await stream.start(clip.video, clip.audio)
    for packet in packets:
        await stream.packet(packet)
    await stream.end()
    # The sound jumped with the pictures: it goes on from its last sample, no minute of silence.
    assert metrics.audio_filled.labels("jump0001")._value.get() == 0
    for name in RENDITIONS:
        timeline = stream.renditions[name].timeline
        durations = [p.duration for s in timeline.segments for p in s.parts]
        assert max(durations) <= stream.cadence.part_target, name  # type: ignore[union-attr]
        assert sum(durations) == pytest.approx(4.0, abs=0.05), name
        assert [s.msn for s in timeline.segments] == [0, 1, 2, 3], name


def test_hlsjs_plays_through_the_gaps(tmp_path: Path, page: Page) -> None:
    """hls.js, low latency, across pictures skipped every 2 s and a second missing across a
    segment start: it plays on without a hole to jump (a held picture filled it) and without a
    fatal error."""
    times = [t for t in every(Fraction(30), range(45, 55), period=2.0, seconds=16.0)
             if not 6.8 < t < 7.75]
    clip = demuxed(timed_clip(tmp_path / "clip.mp4", times, Fraction(30)))
    # Patient loads: on a loaded machine a late answer is waited for, not skipped (a part hls.js
    # gave up on would be a hole of its making, not the stream's).
    config = {"lowLatencyMode": True, "levelLoadingTimeOut": 30_000, "fragLoadingTimeOut": 30_000}
    with live(clip, tmp_path / "store", video_id="gaps0001") as rig, player_page() as url:
        start_playing(page, url, rig.url + '/master.m3u8', config, levels=2)
        page.wait_for_function("() => document.querySelector('video').currentTime > 10",
                               timeout=60_000)
        # Parts started with a held picture, counted while the stream is live: at 1.67, 3.67,
        # 5.67, 7, 7.33, 7.67 s, and at 9.67, 11.67... as far as the stream has gone (ten in all).
        held = [s.value for m in rig.stream.metrics.held.collect() for s in m.samples
                if s.name == "reel_live_held_pictures_total"]
        assert held and 6 <= held[0] <= 10, held
        seen = page.evaluate(
            "() => ({errors: window.hlsErrors, error: document.querySelector('video').error})")
    assert not [e for e in seen["errors"] if e["fatal"]], seen["errors"]
    assert not [e for e in seen["errors"] if e["details"] == "bufferSeekOverHole"], seen["errors"]
    assert seen["error"] is None
