"""HLS playlists (RFC 8216): media playlists per rendition and the master that lists them."""

from __future__ import annotations

import math
from dataclasses import dataclass

VERSION = 7  # EXT-X-MAP in a playlist without I-frames-only needs version 6+; 7 for CMAF


@dataclass(frozen=True)
class SegmentInfo:
    uri: str
    duration: float  # seconds
    size: int  # bytes
    key_offset: int = 0  # byte range of the segment's IDR (moof + sample), for trick play
    key_length: int = 0


def target_duration(segments: list[SegmentInfo]) -> int:
    # RFC 8216 4.3.3.1: every EXTINF rounded to the nearest integer is <= the target duration.
    return max(1, max((round(s.duration) for s in segments), default=1))


def media_playlist(segments: list[SegmentInfo], *, map_uri: str = "init.mp4",
                   playlist_type: str = "VOD", ended: bool = True) -> str:
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(segments)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        f"#EXT-X-PLAYLIST-TYPE:{playlist_type}",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{map_uri}"',
    ]
    for seg in segments:
        lines += [f"#EXTINF:{seg.duration:.6f},", seg.uri]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def iframe_playlist(segments: list[SegmentInfo], *, map_uri: str = "init.mp4") -> str:
    """EXT-X-I-FRAMES-ONLY: one IDR per segment (each segment starts with one), by byte range."""
    lines = [
        "#EXTM3U",
        f"#EXT-X-VERSION:{VERSION}",
        f"#EXT-X-TARGETDURATION:{target_duration(segments)}",
        "#EXT-X-MEDIA-SEQUENCE:0",
        "#EXT-X-PLAYLIST-TYPE:VOD",
        "#EXT-X-I-FRAMES-ONLY",
        "#EXT-X-INDEPENDENT-SEGMENTS",
        f'#EXT-X-MAP:URI="{map_uri}"',
    ]
    for seg in segments:
        lines += [f"#EXTINF:{seg.duration:.6f},",
                  f"#EXT-X-BYTERANGE:{seg.key_length}@{seg.key_offset}", seg.uri]
    lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def iframe_peak_bitrate(segments: list[SegmentInfo]) -> int:
    return max((math.ceil(s.key_length * 8 / s.duration) for s in segments if s.duration > 0),
               default=0)


def peak_bitrate(segments: list[SegmentInfo]) -> int:
    """The largest segment bitrate, in bits per second (RFC 8216 BANDWIDTH)."""
    return max((math.ceil(s.size * 8 / s.duration) for s in segments if s.duration > 0), default=0)


def average_bitrate(segments: list[SegmentInfo]) -> int:
    total = sum(s.duration for s in segments)
    return math.ceil(sum(s.size for s in segments) * 8 / total) if total else 0


@dataclass(frozen=True)
class VideoVariant:
    uri: str
    iframes_uri: str
    width: int
    height: int
    frame_rate: float
    codecs: str
    segments: list[SegmentInfo]


@dataclass(frozen=True)
class AudioVariant:
    uri: str
    codecs: str
    channels: int
    segments: list[SegmentInfo]
    group: str = "audio"
    name: str = "Main"
    language: str = "und"


START_BITRATE = 2_000_000  # bits/s: where a player that takes the first variant should start


def _listing_order(videos: list[VideoVariant], audio_average: int) -> list[VideoVariant]:
    """Best first, except the first of all: the best rung whose average fits START_BITRATE (the
    lowest if none does). Safari and ExoPlayer start on the first variant, and Apple's authoring
    spec asks for one a typical connection can sustain, not the top of the ladder."""
    best_first = sorted(videos, key=lambda v: v.height * v.width, reverse=True)
    fitting = [v for v in best_first if average_bitrate(v.segments) + audio_average <= START_BITRATE]
    if not best_first:
        return []
    start = fitting[0] if fitting else best_first[-1]
    return [start, *(v for v in best_first if v is not start)]


def master_playlist(videos: list[VideoVariant], audio: AudioVariant | None) -> str:
    lines = ["#EXTM3U", f"#EXT-X-VERSION:{VERSION}", "#EXT-X-INDEPENDENT-SEGMENTS"]
    audio_peak = audio_average = 0
    if audio is not None:
        audio_peak, audio_average = peak_bitrate(audio.segments), average_bitrate(audio.segments)
    if audio is not None and videos:
        lines.append(
            f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{audio.group}",NAME="{audio.name}",'
            f'LANGUAGE="{audio.language}",DEFAULT=YES,AUTOSELECT=YES,'
            f'CHANNELS="{audio.channels}",URI="{audio.uri}"'
        )
    for v in _listing_order(videos, audio_average):
        codecs = v.codecs if audio is None else f"{v.codecs},{audio.codecs}"
        attrs = [
            f"BANDWIDTH={peak_bitrate(v.segments) + audio_peak}",
            f"AVERAGE-BANDWIDTH={average_bitrate(v.segments) + audio_average}",
            f'CODECS="{codecs}"',
            f"RESOLUTION={v.width}x{v.height}",
            f"FRAME-RATE={v.frame_rate:.3f}",
        ]
        if audio is not None:
            attrs.append(f'AUDIO="{audio.group}"')
        lines += ["#EXT-X-STREAM-INF:" + ",".join(attrs), v.uri]
    for v in _listing_order(videos, audio_average):
        lines.append(
            f"#EXT-X-I-FRAME-STREAM-INF:BANDWIDTH={iframe_peak_bitrate(v.segments)},"
            f'CODECS="{v.codecs}",RESOLUTION={v.width}x{v.height},URI="{v.iframes_uri}"'
        )
    if not videos and audio is not None:
        lines += [
            f'#EXT-X-STREAM-INF:BANDWIDTH={audio_peak},AVERAGE-BANDWIDTH={audio_average},'
            f'CODECS="{audio.codecs}"',
            audio.uri,
        ]
    return "\n".join(lines) + "\n"
