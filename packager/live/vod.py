"""Live to VOD: the segments a stream makes, kept as the video it becomes (no re-encode).

Each segment is written under `vod/{video_id}/` as it completes, as one fragment (the same
samples as its parts, one moof), so an hour of stream is a VOD within seconds of its end: only
the playlists remain to write then, the I-frame playlists from each segment's IDR, the master
last (its presence means "complete"), as the VOD packager does.
"""

from __future__ import annotations

from collections.abc import Callable

from packager import cmaf, hls
from packager.ladder import AUDIO_NAME
from packager.live.transcoder import Variant

Write = Callable[[str, bytes], None]


class VodRecorder:
    """Segments in, in order per rendition (from the stream's loop); `write` publishes a file."""

    def __init__(self, write: Write) -> None:
        self.write = write
        self.segments: dict[str, list[hls.SegmentInfo]] = {}

    def init(self, name: str, data: bytes) -> None:
        self.write(f"{name}/init.mp4", data)

    def segment(self, name: str, fragment: cmaf.Fragment, duration: float) -> None:
        segments = self.segments.setdefault(name, [])
        uri = f"seg_{len(segments) + 1:05d}.m4s"
        self.write(f"{name}/{uri}", fragment.data)
        segments.append(hls.SegmentInfo(uri, duration, len(fragment.data), fragment.key_offset,
                                        fragment.key_length))

    def finish(self, variants: list[Variant]) -> None:
        """Playlists for `variants` (the rungs that lasted the whole stream), master last."""
        kept = [v for v in variants if self.segments.get(v.name)]
        for variant in kept:
            segments = self.segments[variant.name]
            self.write(f"{variant.name}/index.m3u8", hls.media_playlist(segments).encode())
            if variant.name != AUDIO_NAME:
                self.write(f"{variant.name}/iframes.m3u8", hls.iframe_playlist(segments).encode())
        videos = [hls.VideoVariant(f"{v.name}/index.m3u8", f"{v.name}/iframes.m3u8", v.width,
                                   v.height, v.frame_rate, v.codecs, self.segments[v.name])
                  for v in kept if v.name != AUDIO_NAME]
        audio = next((hls.AudioVariant(f"{v.name}/index.m3u8", v.codecs, 2, self.segments[v.name])
                      for v in kept if v.name == AUDIO_NAME), None)
        if videos or audio:
            self.write("master.m3u8", hls.master_playlist(videos, audio).encode())
