"""Just enough HLS for a load-testing player: master and media playlists read with the `m3u8`
library, URIs made absolute.

A master may be plain (a 302 from geo to an edge, relative URIs) or steered (HLS Content
Steering: each variant listed once per pathway with a PATHWAY-ID and absolute URIs); a steered
master is read as its first pathway only, as a player starts on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import m3u8


@dataclass(frozen=True)
class Variant:
    uri: str
    bandwidth: int
    audio_group: str | None = None
    pathway: str | None = None


@dataclass(frozen=True)
class Master:
    variants: list[Variant]  # lowest bandwidth first
    audio: dict[str, str] = field(default_factory=dict)  # group id -> URI of its default rendition

    def audio_for(self, variant: Variant) -> str | None:
        return self.audio.get(variant.audio_group or "")


def _load(text: str, url: str) -> m3u8.M3U8:
    if not text.startswith("#EXTM3U"):
        raise ValueError("not an HLS playlist")
    return m3u8.loads(text, uri=url)


def parse_master(text: str, url: str) -> Master:
    playlist = _load(text, url)
    audio: dict[str, str] = {}
    for media in playlist.media:
        group = media.group_id or ""
        if media.type == "AUDIO" and media.uri and (group not in audio or media.default == "YES"):
            audio[group] = media.absolute_uri
    variants = [Variant(p.absolute_uri, p.stream_info.bandwidth or 0, p.stream_info.audio,
                        p.stream_info.pathway_id) for p in playlist.playlists]
    pathways = [v.pathway for v in variants if v.pathway]
    if pathways:
        steering = playlist.content_steering
        first = steering.pathway_id if steering and steering.pathway_id in pathways else pathways[0]
        variants = [v for v in variants if v.pathway in (first, None)]
    if not variants:
        raise ValueError("the master playlist lists no variants")
    return Master(sorted(variants, key=lambda v: v.bandwidth), audio)


@dataclass(frozen=True)
class Segment:
    uri: str
    duration: float


@dataclass(frozen=True)
class Media:
    init: str | None
    segments: list[Segment]

    @property
    def duration(self) -> float:
        return sum(s.duration for s in self.segments)


def parse_media(text: str, url: str) -> Media:
    playlist = _load(text, url)
    segments = [Segment(s.absolute_uri, s.duration) for s in playlist.segments]
    if not segments:
        raise ValueError("the media playlist lists no segments")
    init = playlist.segments[0].init_section
    return Media(init.absolute_uri if init else None, segments)
