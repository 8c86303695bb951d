"""A generated clip published in real time: blocking reloads while it is live, then every
playlist tag, part and segment checked (ffprobe, our own boxes), and the store's copy."""

from __future__ import annotations

import http.client
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import m3u8
import pytest

from packager.live.playlist import part_uri
from tests.live.rig import LiveRig, publication, running
from tests.media import check_hls, ffprobe_json, fragment_timing

SECONDS = 8.0
RENDITIONS = ["v360", "v240", "a128"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveRig]:
    root = tmp_path_factory.mktemp("live")
    yield from running(publication(SECONDS, root / "clip.mp4"), root)


def hint(text: str) -> tuple[int, int]:
    match = re.search(r'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_(\d+)_(\d+)\.m4s"', text)
    assert match, text
    return int(match[1]), int(match[2])


def test_blocking_reload_is_answered_once_the_part_exists(rig: LiveRig) -> None:
    status, _, body = rig.get("v360/index.m3u8")
    assert status == 200
    msn, part = hint(body.decode())
    # The preload-hinted part, asked for before it exists, alongside the blocking reload.
    hinted: dict[str, object] = {}

    def fetch_hinted() -> None:
        try:
            hinted.update(zip(("status", "headers", "body"), rig.get(f"v360/{part_uri(msn, part)}"),
                              strict=True))
        except http.client.IncompleteRead:
            # The encoder stalled mid-part (a starved machine): the server cuts the body short
            # rather than pass a truncated part for whole, and a player asks again.
            hinted.update(zip(("status", "headers", "body"), rig.get(f"v360/{part_uri(msn, part)}"),
                              strict=True))

    fetch = threading.Thread(target=fetch_hinted)
    fetch.start()
    status, headers, body = rig.get(f"v360/index.m3u8?_HLS_msn={msn}&_HLS_part={part}")
    fetch.join(10)
    text = body.decode()
    assert status == 200 and f'URI="{part_uri(msn, part)}"' in text  # never an unchanged one
    assert headers["Cache-Control"] == "public, max-age=1"
    assert headers["Content-Type"] == "application/vnd.apple.mpegurl"
    assert headers["Access-Control-Allow-Origin"] == "*"
    assert hint(text) > (msn, part)
    assert hinted["status"] == 200 and hinted["headers"]["Content-Type"] == "video/iso.segment"
    assert hinted["body"] == rig.get(f"v360/{part_uri(msn, part)}")[2]
    # A whole segment asked for (no _HLS_part): held until it is complete.
    status, _, body = rig.get(f"a128/index.m3u8?_HLS_msn={msn + 1}")
    assert status == 200 and f"seg_{msn + 1:05d}.m4s" in body.decode()


def test_blocking_reload_refuses_what_it_cannot_promise(rig: LiveRig) -> None:
    _, _, body = rig.get("v240/index.m3u8")
    msn, _ = hint(body.decode())
    for query in (f"_HLS_msn={msn + 3}", f"_HLS_msn={msn + 3}&_HLS_part=0", "_HLS_msn=x",
                  "_HLS_part=1", "_HLS_msn=1&_HLS_part=-1", "_HLS_skip=NO"):
        status, headers, _ = rig.get(f"v240/index.m3u8?{query}")
        assert status == 400, query
        assert headers["Content-Type"] == "application/problem+json"
    for path in ("v999/index.m3u8", "v240/seg_99999.m4s", "v240/nothing.m4s", "v240/../x"):
        assert rig.get(path)[0] == 404, path


def test_master_lists_the_ladder(rig: LiveRig) -> None:
    status, headers, body = rig.get("master.m3u8")
    assert status == 200 and headers["Content-Type"] == "application/vnd.apple.mpegurl"
    master = m3u8.loads(body.decode())
    assert [p.uri for p in master.playlists] == ["v360/index.m3u8", "v240/index.m3u8"]
    assert [p.stream_info.resolution for p in master.playlists] == [(640, 360), (426, 240)]
    assert all(p.stream_info.codecs.startswith("avc1.") and p.stream_info.codecs.endswith(
        "mp4a.40.2") for p in master.playlists)
    assert [m.uri for m in master.media] == ["a128/index.m3u8"]


def reach(rig: LiveRig, name: str, msn: int, part: int) -> bytes:
    """Blocking reloads, at most two segments ahead each (as a player makes them), until the
    playlist holds part `part` of segment `msn`."""
    for step in range(1, msn + 1):
        status, _, body = rig.get(f"{name}/index.m3u8?_HLS_msn={step}&_HLS_part="
                                  f"{part if step == msn else 0}")
        assert status == 200
    return body


def test_delta_update(rig: LiveRig) -> None:
    body = reach(rig, "v360", 7, 0)  # seven seconds in
    status, _, delta = rig.get("v360/index.m3u8?_HLS_msn=7&_HLS_part=0&_HLS_skip=YES")
    full, delta_text = m3u8.loads(body.decode()), delta.decode()
    assert status == 200 and "#EXT-X-SKIP:SKIPPED-SEGMENTS=1" in delta_text
    assert m3u8.loads(delta_text).media_sequence == full.media_sequence == 0
    assert "seg_00000.m4s" not in delta_text and "seg_00001.m4s" in delta_text


def test_playlists_after_the_end(rig: LiveRig, tmp_path: Path) -> None:
    rig.wait_published()
    for name in RENDITIONS:
        text = rig.get(f"{name}/index.m3u8")[2].decode()
        playlist = m3u8.loads(text)
        assert playlist.is_endlist and "PRELOAD-HINT" not in text
        durations = [s.duration for s in playlist.segments]
        assert len(durations) == SECONDS and all(round(d) <= 1 for d in durations)
        assert abs(sum(durations) - SECONDS) < 0.05
        target = playlist.part_inf.part_target
        parts = [p for s in playlist.segments for p in (s.parts or [])]
        assert parts and all(p.duration <= target for p in parts)
        reports = re.findall(r'RENDITION-REPORT:URI="\.\./(\w+)/index\.m3u8",LAST-MSN=7,'
                             r"LAST-PART=2", text)
        assert sorted(reports) == sorted(set(RENDITIONS) - {name})
        dates = [s.program_date_time.timestamp() for s in playlist.segments]  # the tags as written
        starts = [sum(durations[:i]) for i in range(len(durations))]
        offsets = [round(d - dates[0] - s, 3) for d, s in zip(dates, starts, strict=True)]
        assert all(abs(o) < 0.002 for o in offsets), (name, offsets)
        assert abs(dates[0] - rig.stream.started_at) < 2  # the ingest wall clock


def probe(init: bytes, media: bytes, tmp: Path, stem: str) -> list[dict]:
    path = tmp / f"{stem}.mp4"
    path.write_bytes(init + media)
    return ffprobe_json("-show_entries", "packet=pts_time,flags,duration_time",
                        str(path))["packets"]


def test_parts_and_segments_read_alone(rig: LiveRig, tmp_path: Path) -> None:
    """Each listed part, with its init, is readable on its own; INDEPENDENT=YES exactly where a
    keyframe starts it; a segment is its parts end to end; video parts start alike everywhere."""
    rig.wait_published()
    starts: dict[str, list[float]] = {}
    for name in RENDITIONS:
        init = rig.get(f"{name}/init.mp4")[2]
        playlist = m3u8.loads(rig.get(f"{name}/index.m3u8")[2].decode())
        for segment in playlist.segments:
            if not segment.parts:
                continue
            bodies = [rig.get(f"{name}/{p.uri}")[2] for p in segment.parts]
            assert b"".join(bodies) == rig.get(f"{name}/{segment.uri}")[2]
            for part, body in zip(segment.parts, bodies, strict=True):
                packets = probe(init, body, tmp_path, f"{name}-{part.uri}")
                assert packets and ("K" in packets[0]["flags"]) == bool(part.independent)
                if name.startswith("v"):
                    assert not any("K" in p["flags"] for p in packets[1:])
                    starts.setdefault(name, []).append(round(float(packets[0]["pts_time"]), 4))
    assert starts["v360"] == starts["v240"] and len(starts["v360"]) >= 9


def test_the_store_holds_every_segment(rig: LiveRig, tmp_path: Path) -> None:
    rig.wait_published()
    out = rig.store / "live" / rig.video_id
    assert m3u8.load(str(out / "master.m3u8")).playlists
    tfdts: dict[str, list[int]] = {}
    for name in RENDITIONS:
        playlist = m3u8.load(str(out / name / "index.m3u8"))
        assert playlist.is_endlist and len(playlist.segments) == SECONDS
        joined = (out / name / "init.mp4").read_bytes() + b"".join(
            (out / name / s.uri).read_bytes() for s in playlist.segments)
        packets = probe(joined, b"", tmp_path, name)
        end = max(float(p["pts_time"]) + float(p.get("duration_time", 0)) for p in packets)
        assert abs(end - SECONDS) < 0.05, (name, end)
        tfdts[name] = [fragment_timing((out / name / s.uri).read_bytes())[0]
                       for s in playlist.segments]
        if name.startswith("v"):
            keys = [round(float(p["pts_time"]), 3) for p in packets if "K" in p["flags"]]
            assert keys == [float(n) for n in range(int(SECONDS))]  # an IDR a second, only
    assert tfdts["v360"] == tfdts["v240"] == [n * 90000 for n in range(int(SECONDS))]
    # Out of memory (six segments kept), still served: from the store, as an origin would.
    assert rig.stream.renditions["v360"].timeline.find(0).data is None
    status, headers, body = rig.get("v360/seg_00000.m4s")
    assert status == 200 and body == (out / "v360" / "seg_00000.m4s").read_bytes()
    assert headers["Cache-Control"] == "public, max-age=31536000, immutable"


def test_blocking_after_the_end_answers_at_once(rig: LiveRig) -> None:
    rig.wait_published()
    status, _, body = rig.get("v360/index.m3u8?_HLS_msn=9&_HLS_part=0", timeout=2)
    assert status == 200 and "#EXT-X-ENDLIST" in body.decode()


def test_the_stream_became_a_vod(rig: LiveRig, tmp_path: Path) -> None:
    """Its segments, as the VOD packager's checks want them: master last, I-frame playlists,
    one timeline, an IDR at each segment's start; a poster and a storyboard."""
    rig.wait_published()
    out = rig.store / "vod" / rig.video_id
    master = check_hls(out, tmp_path, SECONDS, segment_seconds=1.0)
    assert len(master.playlists) == 2 and len(master.iframe_playlists) == 2
    assert (out / "thumbs" / "poster.jpg").stat().st_size > 0
    assert (out / "thumbs" / "storyboard.vtt").read_text().startswith("WEBVTT")
    assert (out / "master.m3u8").stat().st_mtime >= max(
        p.stat().st_mtime for p in out.rglob("*") if p.is_file())
