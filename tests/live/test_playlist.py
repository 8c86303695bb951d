"""LL-HLS media playlists tag by tag, from a synthetic timeline (no encoding)."""

from __future__ import annotations

from fractions import Fraction

import m3u8
import pytest

from packager.live.config import Cadence, LiveConfig, snap_rate
from packager.live.playlist import Part, Report, Timeline, program_date_time

WALL = 1_700_000_000.0
CONFIG = LiveConfig(dvr_seconds=10.0, memory_segments=2)
CADENCE = Cadence.of(Fraction(30), CONFIG)


def grow(timeline: Timeline, parts: int) -> None:
    """`parts` more parts of 1/3 s, three a segment, each segment's first independent."""
    done = sum(len(s.parts) for s in timeline.segments)
    for n in range(done, done + parts):
        msn, index = divmod(n, CADENCE.segment_parts)
        timeline.add(Part(msn, index, CADENCE.part_seconds, index == 0, b"x" * 10,
                          n * CADENCE.part_seconds, last=index == CADENCE.segment_parts - 1))


def tags(text: str, name: str) -> list[str]:
    return [line.partition(":")[2] for line in text.splitlines() if line.startswith(name + ":")]


def test_cadence_targets() -> None:
    assert (CADENCE.part_frames, CADENCE.segment_parts) == (10, 3)
    assert CADENCE.target_duration == 1
    # Neither millisecond jitter nor whole AAC frames make a part outlast its target.
    assert CADENCE.part_target >= CADENCE.part_seconds + max(0.5 / 30, 1024 / 48000)
    pal = Cadence.of(Fraction(25), CONFIG)
    assert pal.part_frames == 8 and pal.segment_parts == 3 and pal.target_duration == 1
    assert snap_rate(0.033) == Fraction(30) and snap_rate(0.04167) == Fraction(24)
    assert snap_rate(1 / 29.97) == Fraction(30000, 1001)


def test_tags_of_a_growing_playlist() -> None:
    timeline = Timeline(CADENCE, CONFIG, WALL)
    grow(timeline, 7)  # two segments and one part of the third
    text = timeline.render(reports=[Report("../v240/index.m3u8", 2, 0)])
    playlist = m3u8.loads(text)
    assert playlist.version == 9 and playlist.target_duration == 1
    assert playlist.media_sequence == 0
    control = playlist.server_control
    assert control.can_block_reload == "YES"
    assert control.part_hold_back >= 3 * playlist.part_inf.part_target
    assert control.hold_back >= 3 * playlist.target_duration
    assert control.can_skip_until >= 6 * playlist.target_duration
    assert playlist.part_inf.part_target == pytest.approx(CADENCE.part_target)
    assert [s.uri for s in playlist.segments if s.uri] == ["seg_00000.m4s", "seg_00001.m4s"]
    parts = tags(text, "#EXT-X-PART")
    assert len(parts) == 7 and parts[-1] == 'DURATION=0.33333,URI="part_00002_0.m4s",INDEPENDENT=YES'
    assert [("INDEPENDENT=YES" in p) for p in parts[:3]] == [True, False, False]
    assert tags(text, "#EXT-X-PRELOAD-HINT") == ['TYPE=PART,URI="part_00002_1.m4s"']
    assert tags(text, "#EXT-X-RENDITION-REPORT") == [
        'URI="../v240/index.m3u8",LAST-MSN=2,LAST-PART=0']
    dates = tags(text, "#EXT-X-PROGRAM-DATE-TIME")
    assert dates == ["2023-11-14T22:13:20.000Z", "2023-11-14T22:13:21.000Z",
                     "2023-11-14T22:13:22.000Z"]
    assert "#EXT-X-ENDLIST" not in text


def test_parts_of_old_segments_leave_the_playlist_and_memory() -> None:
    timeline = Timeline(CADENCE, CONFIG, WALL)
    grow(timeline, 3 * 6)
    text = timeline.render()
    listed = {p.partition('URI="')[2][:10] for p in tags(text, "#EXT-X-PART")}
    assert listed == {"part_00003", "part_00004", "part_00005"}  # three target durations
    assert [s.data is not None for s in timeline.segments] == [False] * 4 + [True] * 2
    assert timeline.part(0, 0).data == b"" and timeline.part(5, 2).data == b"x" * 10


def test_dvr_window_slides_the_media_sequence() -> None:
    timeline = Timeline(CADENCE, CONFIG, WALL)
    grow(timeline, 3 * 14)  # 14 s into a 10 s window
    playlist = m3u8.loads(timeline.render())
    assert playlist.media_sequence == 4
    assert len(playlist.segments) == 10
    assert timeline.find(3) is None and timeline.find(4).msn == 4


def test_delta_update_skips_all_but_the_last_six_seconds() -> None:
    timeline = Timeline(CADENCE, LiveConfig(dvr_seconds=60.0), WALL)
    grow(timeline, 3 * 20 + 1)
    full = timeline.render()
    delta = timeline.render(skip=True)
    assert tags(delta, "#EXT-X-SKIP") == ["SKIPPED-SEGMENTS=14"]
    assert m3u8.loads(delta).media_sequence == 0  # still the first segment's, skipped or not
    kept = [line for line in delta.splitlines() if line.startswith("seg_")]
    assert kept == [f"seg_{n:05d}.m4s" for n in range(14, 20)]
    assert full.splitlines()[-4:] == delta.splitlines()[-4:]
    # Each skipped segment was three lines (date, EXTINF, URI); one EXT-X-SKIP replaces them.
    assert len(delta.splitlines()) == len(full.splitlines()) - 3 * 14 + 1


def test_what_exists() -> None:
    timeline = Timeline(CADENCE, CONFIG, WALL)
    assert timeline.last() is None and not timeline.has(0, 0) and timeline.next_part() == (0, 0)
    grow(timeline, 4)
    assert timeline.last() == (1, 0) and timeline.next_part() == (1, 1)
    assert timeline.has(0, None) and timeline.has(0, 2) and timeline.has(1, 0)
    assert not timeline.has(1, None) and not timeline.has(1, 1)
    grow(timeline, 2)
    assert timeline.next_part() == (2, 0) and timeline.has(1, None)
    timeline.ended = True
    text = timeline.render()
    assert text.rstrip().endswith("#EXT-X-ENDLIST") and "PRELOAD-HINT" not in text


def test_a_publisher_back_after_a_gap_continues_the_timeline_with_a_discontinuity() -> None:
    timeline = Timeline(CADENCE, CONFIG, WALL)
    grow(timeline, 7)  # two whole segments and one part of a third: the publisher goes
    timeline.away = True
    sealed = timeline.seal()
    assert sealed is not None and sealed.complete and len(sealed.parts) == 1
    assert "PRELOAD-HINT" not in timeline.render()  # nothing is coming for now
    timeline.discontinue(WALL + 20)  # back 20 s later, on the same media timeline
    start = 7 * CADENCE.part_seconds
    for n in range(6):
        msn, index = 3 + n // 3, n % 3
        timeline.add(Part(msn, index, CADENCE.part_seconds, index == 0, b"y", start + n / 3,
                          last=index == 2))
    text = timeline.render()
    lines = text.splitlines()
    uris = [line for line in lines if line.startswith("seg_")]
    assert uris == [f"seg_{n:05d}.m4s" for n in range(5)]  # sequence numbers go on
    assert lines.index("#EXT-X-DISCONTINUITY") == lines.index("seg_00002.m4s") + 1
    dates = tags(text, "#EXT-X-PROGRAM-DATE-TIME")
    assert dates[2] == program_date_time(WALL + 2)
    assert dates[3] == program_date_time(WALL + 20 + start)  # the wall clock anew
    assert "#EXT-X-DISCONTINUITY-SEQUENCE" not in text and "PRELOAD-HINT" in text
    assert "#EXT-X-DISCONTINUITY" in timeline.render_plain()
    # The window slides past the join: the first segment counts it, and no tag repeats it.
    for n in range(6, 30):
        msn, index = 3 + n // 3, n % 3
        timeline.add(Part(msn, index, CADENCE.part_seconds, index == 0, b"y", start + n / 3,
                          last=index == 2))
    text = timeline.render()
    assert tags(text, "#EXT-X-DISCONTINUITY-SEQUENCE") == ["1"]
    assert "#EXT-X-DISCONTINUITY\n" not in text
    parsed = m3u8.loads(text)
    assert parsed.discontinuity_sequence == 1 and parsed.media_sequence == timeline.first_msn
