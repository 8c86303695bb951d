"""The live viewers' reading of an LL-HLS playlist: the next blocking reload as hls.js computes
it, each part's end by PROGRAM-DATE-TIME, the hint and the rendition reports."""

from __future__ import annotations

import pytest

from edge.live import ahead
from loadtest.hls import parse_master
from loadtest.liveorigin import SyntheticLive
from loadtest.llhls import LivePlaylist


def made(n: int) -> SyntheticLive:
    stream = SyntheticLive(per_segment=4, chunks=1, part_target=0.5)
    for _ in range(n):
        stream.grow()
    return stream


@pytest.mark.parametrize(("parts", "after"), [(3, (0, 3)), (4, (1, 0)), (9, (2, 1))])
def test_the_next_reload_is_the_next_part_or_the_next_segments_first(parts: int, after: tuple) -> None:
    stream = made(parts)
    playlist = LivePlaylist(stream.playlist("v720"))
    assert playlist.next() == after
    assert playlist.hint == (f"part_{after[0]}_{after[1]}.m4s", after)
    # The edge predicts the same reload for its prefetch.
    key = "live/celeb0001/v720/index.m3u8?_HLS_msn=0&_HLS_part=0"
    assert ahead(key, stream.playlist("v720").encode()).reload == \
        f"live/celeb0001/v720/index.m3u8?_HLS_msn={after[0]}&_HLS_part={after[1]}"


def test_parts_end_by_program_date_time_and_other_renditions_are_reported() -> None:
    stream = made(6)
    playlist = LivePlaylist(stream.playlist("v720"))
    assert playlist.last == (1, 1) and playlist.target == 0.5
    assert playlist.ends[(1, 1)] == pytest.approx(stream.wall_start + 6 * 0.5, abs=0.002)
    assert playlist.reports == {"../v360/index.m3u8": (1, 1), "../a128/index.m3u8": (1, 1)}
    with pytest.raises(ValueError):
        LivePlaylist("<html>")


def test_the_audio_rendition_is_a_group_every_variant_names_cut_with_the_video() -> None:
    stream = made(6)
    master = parse_master(stream.master(), "http://edge/live/celeb0001/master.m3u8")
    assert {master.audio_for(v) for v in master.variants} == {"http://edge/live/celeb0001/a128/index.m3u8"}
    audio = LivePlaylist(stream.playlist("a128"))
    assert audio.last == (1, 1) and audio.hint == ("part_1_2.m4s", (1, 2))
    assert audio.reports == {"../v720/index.m3u8": (1, 1), "../v360/index.m3u8": (1, 1)}
    assert 0 < len(stream.part(3, "a128")) < len(stream.part(3, "v720")) / 4
