"""The object layout of DESIGN.md: which keys exist, and what each kind of object is.

Every store and every HTTP path goes through `parse_key`: anything that does not match the layout
is rejected before it can touch a file system or a bucket.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

VIDEO_ID = r"[A-Za-z0-9_-]{6,64}"
_NAME = r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}"
_FILE = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"

_PATTERNS = [
    ("sources", re.compile(rf"sources/({VIDEO_ID})/source")),
    # Who may watch a private or unlisted video: written by control, read by origins, never
    # served; beside vod/ so a packaging job (which rewrites vod/{id}/) or a copy leaves it alone.
    ("access", re.compile(rf"access/({VIDEO_ID})/level")),
    ("vod", re.compile(rf"vod/({VIDEO_ID})/master\.m3u8")),
    ("vod", re.compile(rf"vod/({VIDEO_ID})/{_NAME}/{_FILE}")),
    ("live", re.compile(rf"live/({VIDEO_ID})/{_FILE}")),
    ("live", re.compile(rf"live/({VIDEO_ID})/{_NAME}/{_FILE}")),
]

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".mp4": "video/mp4",
    ".m4s": "video/iso.segment",
    ".jpg": "image/jpeg",
    ".vtt": "text/vtt",
}


@dataclass(frozen=True)
class Key:
    """A validated object key: `space` is sources | vod | live; `owner` the video or stream id."""

    path: str
    space: str
    owner: str

    @property
    def content_type(self) -> str:
        for suffix, ctype in CONTENT_TYPES.items():
            if self.path.endswith(suffix):
                return ctype
        return "application/octet-stream"

    @property
    def kind(self) -> str:
        """playlist | init | segment | image | text | source | other — for caching and metrics."""
        if self.space == "sources":
            return "source"
        return {
            ".m3u8": "playlist",
            ".mp4": "init",
            ".m4s": "segment",
            ".jpg": "image",
            ".vtt": "text",
        }.get(self.path[self.path.rfind(".") :], "other")

    @property
    def immutable(self) -> bool:
        """Segments, init segments, images and VOD playlists never change once written."""
        return self.kind in ("init", "segment", "image") or (
            self.space == "vod" and self.kind in ("playlist", "text")
        )


def parse_key(path: str) -> Key | None:
    """Return the Key for `path`, or None when it is not part of the layout.

    `path` is the already-decoded key ("vod/abc123/master.m3u8"), without a leading slash.
    Traversal (`..`), absolute paths, backslashes and NUL bytes never match the patterns.
    """
    if len(path) > 512:
        return None
    for space, pattern in _PATTERNS:
        match = pattern.fullmatch(path)
        if match:
            return Key(path=path, space=space, owner=match.group(1))
    return None


def access_key(video_id: str) -> str:
    """The marker of a video that is not public (its body: `private` or `unlisted`)."""
    return f"access/{video_id}/level"


def is_video_id(value: str) -> bool:
    return re.fullmatch(VIDEO_ID, value) is not None
