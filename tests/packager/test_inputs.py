"""Any input FFmpeg can decode becomes correct HLS (issue 3's correctness list, per input)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import m3u8
import pytest

from packager import Limits, PackagingError, package
from packager.testclip import make_test_clip
from tests.media import check_hls, ffprobe_json


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=180)


def lavfi_video(size: str, rate: str, seconds: float = 7) -> list[str]:
    return ["-f", "lavfi", "-i", f"testsrc2=size={size}:rate={rate}:duration={seconds}"]


def lavfi_audio(seconds: float = 7, channels: str = "stereo") -> list[str]:
    return ["-f", "lavfi", "-i",
            f"sine=frequency=330:sample_rate=44100:duration={seconds},"
            f"aformat=channel_layouts={channels}"]


def _rendition_sizes(master: m3u8.M3U8) -> list[tuple[int, int]]:
    return [p.stream_info.resolution for p in master.playlists]


def test_rotated_phone_video_comes_out_portrait_and_the_right_way_up(tmp_path: Path) -> None:
    source = make_test_clip(tmp_path / "phone.mp4", seconds=7, width=640, height=360, fps=30,
                            rotation=90)
    package(source, tmp_path / "out")
    master = check_hls(tmp_path / "out", tmp_path, 7.0)
    assert _rendition_sizes(master) == [(360, 640), (240, 426), (144, 256)]

    # Compare our first picture with FFmpeg's own autorotated one, as grey pixels.
    def grey(path: Path, *pre: str) -> bytes:
        return subprocess.run(["ffmpeg", "-v", "error", *pre, "-i", str(path), "-frames:v", "1",
                               "-vf", "scale=90:160", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                              check=True, capture_output=True, timeout=60).stdout

    ours = tmp_path / "ours.mp4"
    ours.write_bytes((tmp_path / "out/v360/init.mp4").read_bytes()
                     + (tmp_path / "out/v360/seg_00001.m4s").read_bytes())
    a, b = grey(source), grey(ours)
    assert len(a) == len(b) == 90 * 160
    assert sum(abs(x - y) for x, y in zip(a, b, strict=True)) / len(a) < 12


def test_variable_frame_rate(tmp_path: Path) -> None:
    source = tmp_path / "vfr.mp4"
    # Drop frames here and there: picture durations of 1/30 s and longer, timestamps kept.
    ffmpeg(*lavfi_video("480x270", "30"), *lavfi_audio(), "-vf",
           "select='not(between(n\\,40\\,44)+between(n\\,100\\,101)+eq(mod(n\\,7)\\,3))'",
           "-fps_mode", "vfr", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
           str(source))
    durations = {p["duration_time"] for p in ffprobe_json(
        "-select_streams", "v", "-show_entries", "packet=duration_time", str(source))["packets"]}
    assert len(durations) > 1  # really variable
    package(source, tmp_path / "out")
    check_hls(tmp_path / "out", tmp_path, 7.0)


def test_hevc_10_bit_60fps_with_5_1_audio(tmp_path: Path) -> None:
    source = tmp_path / "hevc.mp4"
    ffmpeg(*lavfi_video("640x360", "60"), *lavfi_audio(channels="5.1"), "-c:v", "libx265",
           "-preset", "ultrafast", "-pix_fmt", "yuv420p10le", "-x265-params", "log-level=none",
           "-c:a", "aac", str(source))
    package(source, tmp_path / "out")
    master = check_hls(tmp_path / "out", tmp_path, 7.0, frame_rate=60)
    assert master.playlists[0].stream_info.frame_rate == pytest.approx(60.0)
    audio = ffprobe_json("-show_entries", "stream=channels,sample_rate",
                         str(tmp_path / "out/a128/init.mp4"))["streams"][0]
    assert audio == {"channels": 2, "sample_rate": "48000"}  # delivered as stereo AAC


def test_vp9_webm_with_odd_dimensions_and_mono_opus(tmp_path: Path) -> None:
    source = tmp_path / "odd.webm"
    ffmpeg(*lavfi_video("641x359", "25"), *lavfi_audio(channels="mono"), "-c:v", "libvpx-vp9",
           "-deadline", "realtime", "-cpu-used", "8", "-c:a", "libopus", str(source))
    package(source, tmp_path / "out")
    master = check_hls(tmp_path / "out", tmp_path, 7.0, frame_rate=25)
    for width, height in _rendition_sizes(master):
        assert width % 2 == 0 and height % 2 == 0
        assert width / height == pytest.approx(641 / 359, rel=0.02)


def test_av1_at_23_976_without_audio(tmp_path: Path) -> None:
    source = tmp_path / "av1.mp4"
    ffmpeg(*lavfi_video("480x270", "24000/1001"), "-c:v", "libaom-av1", "-cpu-used", "8",
           "-b:v", "300k", str(source))
    package(source, tmp_path / "out")
    master = check_hls(tmp_path / "out", tmp_path, 7.0, frame_rate=23.976)
    assert master.playlists[0].stream_info.frame_rate == pytest.approx(23.976)
    assert not master.media and all("mp4a" not in p.stream_info.codecs for p in master.playlists)


def test_audio_that_starts_late_still_starts_with_the_picture(tmp_path: Path) -> None:
    source = tmp_path / "late.mp4"
    ffmpeg(*lavfi_video("320x180", "30"), "-itsoffset", "0.5", *lavfi_audio(6.5), "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "aac", str(source))
    package(source, tmp_path / "out")
    check_hls(tmp_path / "out", tmp_path, 7.0)  # audio too: starts at 0, lasts 7 s


def test_audio_only_becomes_audio_only_hls(tmp_path: Path) -> None:
    source = tmp_path / "podcast.m4a"
    ffmpeg(*lavfi_audio(channels="mono"), "-c:a", "aac", str(source))
    result = package(source, tmp_path / "out")
    assert result.renditions == ["a128"]
    master = check_hls(tmp_path / "out", tmp_path, 7.0)
    assert [p.stream_info.codecs for p in master.playlists] == ["mp4a.40.2"]
    assert not (tmp_path / "out" / "thumbs").exists()


@pytest.mark.parametrize(("seconds", "segments"), [(6.0, 1), (12.0, 2), (12.01, 2), (12.6, 3)])
def test_exact_and_near_multiples_of_the_segment_length(tmp_path: Path, seconds: float,
                                                        segments: int) -> None:
    """Portrait H.264 + AAC, both streams exactly `seconds` long: no tail segment of codec padding
    (never a negative or sliver EXTINF), durations that add up, one timeline for every reader."""
    source = tmp_path / "portrait.mp4"
    ffmpeg(*lavfi_video("360x640", "30", seconds), "-f", "lavfi", "-i",
           f"sine=frequency=330:sample_rate=48000:duration={seconds}", "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "aac", str(source))
    package(source, tmp_path / "out")
    master = check_hls(tmp_path / "out", tmp_path, round(seconds * 30) / 30)
    for name in ["a128", *(p.uri.split("/")[0] for p in master.playlists)]:
        playlist = m3u8.load(str(tmp_path / "out" / name / "index.m3u8"))
        assert len(playlist.segments) == segments, (name, [s.duration for s in playlist.segments])


def test_variable_frame_rate_matroska_with_mono_audio_ending_on_a_boundary(tmp_path: Path) -> None:
    source = tmp_path / "vfr.mkv"
    ffmpeg(*lavfi_video("320x240", "30", 12), *lavfi_audio(12, "mono"), "-vf",
           "select='not(eq(mod(n\\,5)\\,2))'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-preset", "ultrafast", "-c:a", "libopus", str(source))
    package(source, tmp_path / "out")
    check_hls(tmp_path / "out", tmp_path, 12.0, frame_rate=15)
    audio = m3u8.load(str(tmp_path / "out/a128/index.m3u8"))
    assert len(audio.segments) == 2 and all(s.duration > 5.9 for s in audio.segments)


@pytest.fixture(scope="module")
def small_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_test_clip(tmp_path_factory.mktemp("src") / "clip.mp4", seconds=7, width=320,
                          height=180, fps=30)


def test_a_still_image_is_refused(tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    ffmpeg(*lavfi_video("320x240", "1", 1), "-frames:v", "1", str(image))
    with pytest.raises(PackagingError) as failure:
        package(image, tmp_path / "out")
    assert failure.value.reason == "still_image"


def test_a_truncated_upload_is_refused(tmp_path: Path) -> None:
    whole = tmp_path / "whole.mp4"
    ffmpeg(*lavfi_video("320x180", "30", 12), "-c:v", "libx264", "-preset", "ultrafast",
           "-movflags", "+faststart", str(whole))
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(PackagingError) as failure:
        package(cut, tmp_path / "out")
    assert failure.value.reason == "truncated"
    assert not (tmp_path / "out" / "master.m3u8").exists()


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (Limits(max_seconds=5), "too_long"),
        (Limits(max_height=100), "resolution_too_high"),
        (Limits(max_bytes=1000), "too_large"),
        (Limits(max_processing_seconds=1e-6), "timeout"),
    ],
)
def test_limits_fail_with_their_reason(small_clip: Path, tmp_path: Path, limits: Limits,
                                       reason: str) -> None:
    with pytest.raises(PackagingError) as failure:
        package(small_clip, tmp_path / "out", limits=limits)
    assert failure.value.reason == reason
    assert not (tmp_path / "out" / "master.m3u8").exists()
