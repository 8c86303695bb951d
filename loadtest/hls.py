"""Just enough HLS for a load-testing player: master and media playlists, URIs made absolute.

A master may be plain (a 302 from geo to an edge, relative URIs) or steered (HLS Content
Steering: each variant listed once per pathway with a PATHWAY-ID and absolute URIs); a steered
master is read as its first pathway only, as a player starts on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urljoin

_ATTRIBUTE = re.compile(r'([A-Z0-9-]+)=("[^"]*"|[^,]*)')


def attributes(text: str) -> dict[str, str]:
    """`A=1,B="x,y"` -> {"A": "1", "B": "x,y"}."""
    return {name: value.strip('"') for name, value in _ATTRIBUTE.findall(text)}


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


def parse_master(text: str, url: str) -> Master:
    if not text.startswith("#EXTM3U"):
        raise ValueError("not an HLS playlist")
    variants: list[Variant] = []
    audio: dict[str, str] = {}
    steering_first: str | None = None
    pending: dict[str, str] | None = None
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("#EXT-X-CONTENT-STEERING:"):
            steering_first = attributes(line.partition(":")[2]).get("PATHWAY-ID")
        elif line.startswith("#EXT-X-MEDIA:"):
            media = attributes(line.partition(":")[2])
            if media.get("TYPE") == "AUDIO" and "URI" in media:
                group = media.get("GROUP-ID", "")
                if group not in audio or media.get("DEFAULT") == "YES":
                    audio[group] = urljoin(url, media["URI"])
        elif line.startswith("#EXT-X-STREAM-INF:"):
            pending = attributes(line.partition(":")[2])
        elif line and not line.startswith("#") and pending is not None:
            variants.append(Variant(urljoin(url, line), int(pending.get("BANDWIDTH", 0)),
                                    pending.get("AUDIO"), pending.get("PATHWAY-ID")))
            pending = None
    pathways = [v.pathway for v in variants if v.pathway]
    if pathways:
        first = steering_first if steering_first in pathways else pathways[0]
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
    if not text.startswith("#EXTM3U"):
        raise ValueError("not an HLS playlist")
    init = None
    segments: list[Segment] = []
    duration: float | None = None
    for line in (raw.strip() for raw in text.splitlines()):
        if line.startswith("#EXT-X-MAP:"):
            init = urljoin(url, attributes(line.partition(":")[2])["URI"])
        elif line.startswith("#EXTINF:"):
            duration = float(line.partition(":")[2].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            segments.append(Segment(urljoin(url, line), duration))
            duration = None
    if not segments:
        raise ValueError("the media playlist lists no segments")
    return Media(init, segments)
