"""`reel package`: HLS that players and ffprobe accept, with renditions that switch cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import m3u8
import pytest

from packager import PackagingError, package
from packager.testclip import make_test_clip
from tests.media import count_frames, ffprobe_json, join_rendition, keyframe_flags


@pytest.fixture(scope="module")
def landscape(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 13 s 720p30 clip with audio, packaged once for the module (through the CLI)."""
    tmp = tmp_path_factory.mktemp("landscape")
    clip = make_test_clip(tmp / "clip.mp4", seconds=13, width=1280, height=720, fps=30)
    out = tmp / "out"
    subprocess.run([sys.executable, "-m", "reel", "package", str(clip), str(out)],
                   check=True, timeout=300)
    return clip, out


def test_master_lists_renditions_with_every_attribute(landscape: tuple[Path, Path]) -> None:
    _, out = landscape
    text = (out / "master.m3u8").read_text()
    assert "#EXT-X-INDEPENDENT-SEGMENTS" in text
    master = m3u8.load(str(out / "master.m3u8"))
    heights = [p.stream_info.resolution[1] for p in master.playlists]
    # Never upscaled; a player taking the first variant starts on the best rung averaging at most
    # 2 Mbit/s, then the rest best first.
    assert sorted(heights, reverse=True) == [720, 480, 360, 240, 144]
    by_height = {p.stream_info.resolution[1]: p.stream_info.average_bandwidth for p in master.playlists}
    start = max(h for h, bandwidth in by_height.items() if bandwidth <= 2_000_000)
    assert start < 720 and heights == [start, *(h for h in [720, 480, 360, 240, 144] if h != start)]
    for playlist in master.playlists:
        info = playlist.stream_info
        assert info.bandwidth >= info.average_bandwidth > 0
        assert info.frame_rate == pytest.approx(30.0)
        video_codec, audio_codec = info.codecs.split(",")
        assert video_codec.startswith("avc1.") and len(video_codec) == 11
        assert audio_codec == "mp4a.40.2"
        width, height = info.resolution
        assert width % 2 == 0 and height % 2 == 0
        assert width / height == pytest.approx(16 / 9, rel=0.01)
    audio = [m for m in master.media if m.type == "AUDIO"]
    assert len(audio) == 1 and audio[0].uri == "a128/index.m3u8"
    # Higher rungs cost more bits.
    bandwidths = [p.stream_info.average_bandwidth for p in master.playlists]
    assert bandwidths[1:] == sorted(bandwidths[1:], reverse=True)


def test_codecs_match_the_encoded_streams(landscape: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = landscape
    master = m3u8.load(str(out / "master.m3u8"))
    for playlist in master.playlists:
        name = playlist.uri.split("/")[0]
        joined = tmp_path / f"{name}.mp4"
        joined.write_bytes((out / name / "init.mp4").read_bytes()
                           + (out / name / "seg_00001.m4s").read_bytes())
        stream = ffprobe_json("-show_entries", "stream=profile,level,width,height",
                              str(joined))["streams"][0]
        codec = playlist.stream_info.codecs.split(",")[0]
        profile = {"High": "64", "Main": "4d", "Constrained Baseline": "42"}[stream["profile"]]
        assert codec[5:7] == profile
        assert int(codec[9:11], 16) == stream["level"]
        assert (stream["width"], stream["height"]) == playlist.stream_info.resolution


def test_media_playlists_are_vod_with_six_second_segments(landscape: tuple[Path, Path]) -> None:
    _, out = landscape
    for name in ("v720", "v480", "v360", "v240", "v144", "a128"):
        playlist = m3u8.load(str(out / name / "index.m3u8"))
        assert playlist.playlist_type == "vod" and playlist.is_endlist
        assert playlist.segment_map[0].uri == "init.mp4"
        durations = [s.duration for s in playlist.segments]
        assert len(durations) == 3
        assert all(abs(d - 6.0) <= 0.5 for d in durations[:-1])
        assert sum(durations) == pytest.approx(13.0, abs=0.05)
        assert playlist.target_duration >= max(round(d) for d in durations)


def test_every_segment_starts_with_an_idr_at_the_same_time_everywhere(
    landscape: tuple[Path, Path], tmp_path: Path
) -> None:
    _, out = landscape
    starts = {}
    for name in ("v720", "v480", "v360", "v240"):
        playlist = m3u8.load(str(out / name / "index.m3u8"))
        for seg in playlist.segments:
            flags = keyframe_flags(out / name / "init.mp4", out / name / seg.uri, tmp_path)
            assert flags[0], f"{name}/{seg.uri} does not start with a keyframe"
            assert not any(flags[1:]), f"{name}/{seg.uri} has a keyframe inside"
        starts[name] = [s.duration for s in playlist.segments]
    assert len({tuple(v) for v in starts.values()}) == 1  # identical cut points


def test_whole_rendition_decodes_without_gaps(landscape: tuple[Path, Path], tmp_path: Path) -> None:
    _, out = landscape
    assert count_frames(join_rendition(out, "v480", tmp_path)) == 13 * 30
    result = subprocess.run(["ffmpeg", "-v", "error", "-i", str(out / "master.m3u8"), "-map", "0",
                             "-f", "null", "-"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == ""


def test_poster_is_a_jpeg(landscape: tuple[Path, Path]) -> None:
    _, out = landscape
    stream = ffprobe_json("-show_entries", "stream=codec_name,width,height",
                          str(out / "thumbs" / "poster.jpg"))["streams"][0]
    assert stream == {"codec_name": "mjpeg", "width": 1280, "height": 720}


def test_portrait_without_audio(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "v.mp4", seconds=4, width=360, height=640, fps=25, audio=False)
    result = package(clip, tmp_path / "out")
    assert result.renditions == ["v360", "v240", "v144"]
    master = m3u8.load(str(tmp_path / "out" / "master.m3u8"))
    assert [p.stream_info.resolution for p in master.playlists] == [(360, 640), (240, 426), (144, 256)]
    assert all("mp4a" not in p.stream_info.codecs for p in master.playlists)
    assert not master.media


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty_input"), (b"this is not a video at all\n" * 1000, "not_a_video")],
)
def test_bad_input_fails_with_a_reason_and_publishes_nothing(
    tmp_path: Path, content: bytes, reason: str
) -> None:
    source = tmp_path / "upload"
    source.write_bytes(content)
    with pytest.raises(PackagingError) as failure:
        package(source, tmp_path / "out")
    assert failure.value.reason == reason
    assert not (tmp_path / "out" / "master.m3u8").exists()


def test_cli_reports_the_reason(tmp_path: Path) -> None:
    source = tmp_path / "garbage.mp4"
    source.write_bytes(bytes(range(256)) * 64)
    run = subprocess.run([sys.executable, "-m", "reel", "package", str(source), str(tmp_path / "o")],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "not_a_video" in run.stderr and "Traceback" not in run.stderr
