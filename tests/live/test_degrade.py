"""Falling behind real time is answered by degrading (a faster preset, then the top rung goes),
never by letting latency grow; the metrics say so, and the stream stays correct."""

from __future__ import annotations

import time
from pathlib import Path

import m3u8
from prometheus_client import CollectorRegistry

from packager.live.config import LiveConfig
from packager.live.encode import LiveMetrics
from packager.live.media import MediaPacket
from packager.live.stream import LiveStream
from packager.live.transcoder import Transcoder
from packager.output import DirectoryOutput
from tests.live.rig import publication, publish
from tests.media import check_hls

# Every picture counts as late (max_lag 0): each lane steps down at every second segment start.
IMPATIENT = LiveConfig(rung_names=("v360", "v240"), preset="superfast",
                       faster_presets=("ultrafast",), max_lag=0.0)


async def test_a_stream_behind_takes_faster_presets_then_drops_its_top_rung(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    stream = LiveStream("slow0001", DirectoryOutput(tmp_path / "live"),
                        vod_output=DirectoryOutput(tmp_path / "vod"), config=IMPATIENT,
                        metrics=LiveMetrics(registry))
    await publish(stream, publication(6, tmp_path / "clip.mp4"), end=False)
    assert await stream.changes.until(lambda: stream.renditions["v360"].dropped, 30)

    def sample(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {"stream": "slow0001", **labels})

    assert sample("reel_live_degrades_total", action="preset") == 2  # each rung, once
    assert sample("reel_live_degrades_total", action="drop_rung") == 1
    assert sample("reel_live_encode_speed", rendition="v240") > 0
    assert sample("reel_live_rung_delay_seconds", rendition="v240") >= 0
    assert sample("reel_live_parts_total", rendition="v240") >= 15
    assert stream.renditions["v360"].dropped and not stream.renditions["v240"].dropped
    assert [p.uri for p in m3u8.loads(stream.master).playlists] == ["v240/index.m3u8"]
    assert "v360" not in stream.playlist("v240") and "../a128/" in stream.playlist("v240")
    lanes = {t.lane.rendition.name: t.lane for t in stream._transcoder.lanes}
    assert lanes["v240"].level == 1  # ultrafast now, with the init segment it started with
    await stream.end()
    assert sample("reel_live_parts_total", rendition="v240") is None  # forgotten with the stream
    # The rung that stayed plays to the end; the VOD is made of what lasted.
    playlist = m3u8.loads(stream.playlist("v240"))
    assert playlist.is_endlist and len(playlist.segments) == 6
    master = check_hls(tmp_path / "vod", tmp_path, 6.0, segment_seconds=1.0)
    assert [p.uri for p in master.playlists] == ["v240/index.m3u8"]


def test_decoding_far_behind_skips_to_the_next_keyframe() -> None:
    registry = CollectorRegistry()
    transcoder = Transcoder("lag00001", None, None, LiveConfig(), events=None,  # type: ignore[arg-type]
                            metrics=LiveMetrics(registry))
    key = MediaPacket("video", 0, 0, b"", keyframe=True)
    other = MediaPacket("video", 33, 33, b"")
    late, now = time.monotonic() - 10, time.monotonic
    assert not transcoder._skip(key, late)  # a keyframe is always decoded
    assert transcoder._skip(other, late)
    assert transcoder._skip(other, now())  # on time again, but it needs what was skipped
    assert not transcoder._skip(key, now()) and not transcoder._skip(other, now())
    assert registry.get_sample_value("reel_live_dropped_frames_total",
                                     {"stream": "lag00001", "rendition": "source"}) == 2
