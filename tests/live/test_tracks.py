"""Publishers with one kind of track only: pictures without sound, sound without pictures."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import m3u8
import pytest

from packager.live.stream import LiveStream
from packager.output import DirectoryOutput
from tests.live.rig import TEST_CONFIG, publication, publish
from tests.media import check_hls


@pytest.mark.parametrize("kind", ["video", "audio"])
async def test_one_kind_of_track(kind: str, tmp_path: Path) -> None:
    source = publication(3, tmp_path / "clip.mp4")
    source = replace(source, packets=[p for p in source.packets if p.kind == kind],
                     video=source.video if kind == "video" else None,
                     audio=source.audio if kind == "audio" else None)
    stream = LiveStream("mono0001", vod_output=DirectoryOutput(tmp_path / "vod"),
                        config=TEST_CONFIG)
    await publish(stream, source)
    master = m3u8.loads(stream.master)
    names = {"video": ["v360", "v240"], "audio": ["a128"]}[kind]
    assert [p.uri for p in master.playlists] == [f"{n}/index.m3u8" for n in names]
    assert not master.media
    # Sound lasts as long as the frames sent (the clip's encoder rounded it up to whole ones).
    seconds = 3.0 if kind == "video" else len(source.packets) * 1024 / 48000
    for name in names:
        playlist = m3u8.loads(stream.playlist(name))
        assert playlist.is_endlist and len(playlist.segments) == math.ceil(seconds)
    check_hls(tmp_path / "vod", tmp_path, seconds, segment_seconds=1.0)
