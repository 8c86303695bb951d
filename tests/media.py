"""Test helpers that read media the way players and ffprobe do."""

from __future__ import annotations

import json
import struct
import subprocess
from pathlib import Path

import m3u8


def ffprobe_json(*args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args],
                         check=True, capture_output=True, timeout=120).stdout
    return json.loads(out)


def join_rendition(out: Path, name: str, tmp: Path) -> Path:
    """One rendition as a single fragmented MP4 (init + every segment of its playlist)."""
    playlist = m3u8.load(str(out / name / "index.m3u8"))
    joined = tmp / f"{name}.mp4"
    joined.write_bytes(b"".join((out / name / n).read_bytes()
                                for n in ["init.mp4", *(s.uri for s in playlist.segments)]))
    return joined


def count_frames(path: Path) -> int:
    """Pictures ffprobe decodes from a file."""
    stream = ffprobe_json("-select_streams", "v", "-count_frames", "-show_entries",
                          "stream=nb_read_frames", str(path))["streams"][0]
    return int(stream["nb_read_frames"])


def keyframe_flags(init: Path, segment: Path, tmp: Path) -> list[bool]:
    """For each video packet of one segment (decode order), whether it is a keyframe."""
    joined = tmp / f"{segment.parent.name}-{segment.name}.mp4"
    joined.write_bytes(init.read_bytes() + segment.read_bytes())
    packets = ffprobe_json("-select_streams", "v", "-show_entries", "packet=flags",
                           str(joined))["packets"]
    return ["K" in p["flags"] for p in packets]


def boxes(data: bytes, start: int = 0, end: int | None = None) -> list[tuple[bytes, int, int]]:
    """Top-level ISO-BMFF boxes in data[start:end]: (type, payload start, box end)."""
    out, pos, end = [], start, len(data) if end is None else end
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            size, header = struct.unpack_from(">Q", data, pos + 8)[0], 16
        out.append((kind, pos + header, pos + size))
        pos += size
    return out


def fragment_timing(segment: bytes) -> tuple[int, int, int, list[bool]]:
    """(tfdt, sum of sample durations, first sample's composition offset, sync flags) of a
    one-fragment CMAF segment, read from its own boxes."""
    moof = next(b for b in boxes(segment) if b[0] == b"moof")
    traf = next(b for b in boxes(segment, moof[1], moof[2]) if b[0] == b"traf")
    inner = {k: (s, e) for k, s, e in boxes(segment, traf[1], traf[2])}
    s, _ = inner[b"tfdt"]
    version = segment[s]
    tfdt = (struct.unpack_from(">Q", segment, s + 4)[0] if version == 1
            else struct.unpack_from(">I", segment, s + 4)[0])
    s, _ = inner[b"trun"]
    flags = int.from_bytes(segment[s + 1:s + 4], "big")
    count = struct.unpack_from(">I", segment, s + 4)[0]
    pos = s + 8 + (4 if flags & 0x1 else 0) + (4 if flags & 0x4 else 0)
    total, first_offset, syncs = 0, 0, []
    for i in range(count):
        duration = sample_flags = offset = 0
        if flags & 0x100:
            duration, pos = struct.unpack_from(">I", segment, pos)[0], pos + 4
        if flags & 0x200:
            pos += 4  # sample size
        if flags & 0x400:
            sample_flags, pos = struct.unpack_from(">I", segment, pos)[0], pos + 4
        if flags & 0x800:
            offset, pos = struct.unpack_from(">i", segment, pos)[0], pos + 4
        total += duration
        if i == 0:
            first_offset = offset
        syncs.append(not sample_flags & 0x00010000)
    return tfdt, total, first_offset, syncs


MP4_TIMELINE = Path(__file__).with_name("mp4_timeline.cjs")
AAC_FRAME_SECONDS = 1024 / 48000


def mp4box_tracks(path: Path) -> list[dict]:
    """Each track's timing as mp4box.js (a reader independent of FFmpeg and of ours) reads it."""
    out = subprocess.run(["node", str(MP4_TIMELINE), str(path)], check=True, capture_output=True,
                         timeout=120).stdout
    return json.loads(out)


def track_timescale(init: bytes) -> int:
    at = init.find(b"mdhd") + 4
    return struct.unpack_from(">I", init, at + (12 if init[at] == 0 else 20))[0]


def edit_delay(init: bytes) -> int:
    """The media time the init segment's edit list starts presentation at (0 without one)."""
    at = init.find(b"elst")
    if at < 0:
        return 0
    version = init[at + 4]
    return struct.unpack_from(">i" if version == 0 else ">q", init, at + 12 + 4 * (1 + version))[0]


def _starts(path: Path) -> tuple[float, float]:
    """(ffprobe's, mp4box.js's) first presentation time of the file's one track, in seconds."""
    ffprobe = float(ffprobe_json("-show_entries", "stream=start_time", str(path))["streams"][0]
                    ["start_time"])
    track = mp4box_tracks(path)[0]
    return ffprobe, (track["min_cts"] - track["edit"]) / track["timescale"]


def check_timeline(out: Path, names: list[str], tmp: Path) -> None:
    """Every reader sees one timeline: each rendition starts at the same presentation time, audio
    and video alike, and fragment N of every video rendition starts at the same time, read from
    our own boxes, by ffprobe and by mp4box.js, per fragment and joined."""
    starts: dict[str, list[float]] = {}
    for name in names:
        init = (out / name / "init.mp4").read_bytes()
        scale, delay = track_timescale(init), edit_delay(init)
        per_fragment = []
        for seg in m3u8.load(str(out / name / "index.m3u8")).segments:
            data = (out / name / seg.uri).read_bytes()
            tfdt, _, first_offset, _ = fragment_timing(data)
            single = tmp / f"{name}-{seg.uri}.mp4"
            single.write_bytes(init + data)
            ffprobe, mp4box = _starts(single)
            ours = (tfdt + first_offset - delay) / scale
            assert abs(ffprobe - ours) < 0.0005 and abs(mp4box - ours) < 1e-6, (name, seg.uri)
            per_fragment.append(ours)
        joined = _starts(join_rendition(out, name, tmp))
        assert all(abs(t - per_fragment[0]) < 0.0005 for t in joined), (name, joined)
        starts[name] = per_fragment
    first = {name: s[0] for name, s in starts.items()}
    assert all(abs(t) < 0.0005 for t in first.values()), first  # audio and video start at zero
    videos = [s for name, s in starts.items() if name.startswith("v")]
    assert all(s == videos[0] for s in videos), starts  # fragment N starts alike everywhere


def check_hls(out: Path, tmp: Path, duration: float, frame_rate: float = 30.0,
              segment_seconds: float = 6.0) -> dict:
    """What every packaged video must satisfy (issue 3's correctness list); returns the master.
    `segment_seconds`: the VOD packager's 6 s, or a live stream's shorter segments."""
    master = m3u8.load(str(out / "master.m3u8"))
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in (out / "master.m3u8").read_text()
    renditions = [p.uri.split("/")[0] for p in master.playlists]
    renditions += [m.uri.split("/")[0] for m in master.media if m.uri]
    cut_points: dict[str, list[float]] = {}
    for name in dict.fromkeys(renditions):
        playlist = m3u8.load(str(out / name / "index.m3u8"))
        assert playlist.playlist_type == "vod" and playlist.is_endlist
        durations = [s.duration for s in playlist.segments]
        assert all(abs(d - segment_seconds) <= 0.5 for d in durations[:-1]), durations
        # No sliver of a segment at the end: none shorter than an audio frame.
        assert all(d >= AAC_FRAME_SECONDS - 1e-6 for d in durations), (name, durations)
        frame = 1 / frame_rate if name.startswith("v") else AAC_FRAME_SECONDS
        assert abs(sum(durations) - duration) <= frame + 0.001, (name, sum(durations))
        expected_tfdt = None
        for seg in playlist.segments:
            tfdt, total, first_offset, syncs = fragment_timing((out / name / seg.uri).read_bytes())
            assert expected_tfdt in (None, tfdt), f"{name}/{seg.uri}: tfdt gap"  # continuous
            expected_tfdt = tfdt + total
            if name.startswith("v"):
                assert syncs[0] and not any(syncs[1:]), f"{name}/{seg.uri}: one IDR, first"
        if name.startswith("v"):
            cut_points[name] = [round(sum(durations[:i]), 4) for i in range(len(durations))]
            joined = join_rendition(out, name, tmp)
            packets = ffprobe_json("-select_streams", "v", "-show_entries", "packet=pts_time,flags",
                                   str(joined))["packets"]
            keys = sorted(float(p["pts_time"]) for p in packets if "K" in p["flags"])
            # The bitstream agrees: an IDR at each segment start, none elsewhere.
            assert [round(k - keys[0], 2) for k in keys] == [round(c, 2) for c in cut_points[name]]
            iframes = m3u8.load(str(out / name / "iframes.m3u8"))
            assert iframes.is_i_frames_only and len(iframes.segments) == len(durations)
    assert len({tuple(v) for v in cut_points.values()}) <= 1  # identical cuts in every rendition
    check_timeline(out, list(dict.fromkeys(renditions)), tmp)
    return master
