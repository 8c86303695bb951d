"""What the edge reads in an LL-HLS media playlist: what its viewers will ask for next.

An edge that has just answered a live playlist knows, before any viewer asks, the two requests
every one of them makes next: the blocking reload for the part after the last one listed (as
hls.js computes it: the next part of the same segment, or part 0 of the next segment when the
last part closed one) and the preload-hinted part. Asking for both at once (prefetch) means the
first viewer of each part finds the fetch already held at the origin instead of paying the round
trip. And a plain reload is kept for about one part (PART-TARGET): it changes every part.
"""

from __future__ import annotations

import posixpath
import re
from collections import OrderedDict
from dataclasses import dataclass

from edge.cache import Entry
from edge.http import base_key, relative_key

_PART_TARGET = re.compile(r"#EXT-X-PART-INF:.*?PART-TARGET=([0-9.]+)")
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:.*?TYPE=PART.*?URI="([^"]+)"')
_SEQUENCE = re.compile(r"#EXT-X-MEDIA-SEQUENCE:(\d+)")
_SKIPPED = re.compile(r"#EXT-X-SKIP:.*?SKIPPED-SEGMENTS=(\d+)")


def is_live_key(key: str) -> bool:
    return key.startswith("live/")


def brief(cache_control: str) -> bool:
    """Whether a plain live reload's Cache-Control says "not at all" (max-age=0) without
    forbidding a shared cache to keep it: then the edge keeps it for about one part."""
    directives = {part.strip().split("=", 1)[0].lower(): part.strip() for part in cache_control.split(",")}
    return directives.get("max-age") == "max-age=0" and not {"no-store", "private"} & directives.keys()


def is_live_playlist(key: str) -> bool:
    """A live media playlist (with or without blocking directives); not the master."""
    path = base_key(key)
    return path.startswith("live/") and path.endswith(".m3u8") and not path.endswith("/master.m3u8")


@dataclass(frozen=True)
class Ahead:
    """What a live playlist's viewers ask for next: the blocking reload's key, the hinted part's."""

    reload: str | None
    hint: str | None
    part_target: float | None
    last: tuple[int, int] | None = None  # the last part listed (msn, index)


def part_target(text: str) -> float | None:
    match = _PART_TARGET.search(text)
    try:
        return float(match[1]) if match else None
    except ValueError:
        return None


def ahead(key: str, body: bytes) -> Ahead:
    """The next requests the viewers of the playlist `key` (answered with `body`) will make.
    The reload keeps `key`'s _HLS_skip, as the players that asked for it do."""
    text = bytes(body).decode("utf-8", "replace")
    msn = 0
    last: tuple[int, int] | None = None  # (msn, index) of the last part listed
    closed = False  # whether the segment of the last part is complete (a URI line after it)
    index = 0
    hint = None
    for line in text.splitlines():
        if line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            if match := _SEQUENCE.match(line):
                msn = int(match[1])
        elif line.startswith("#EXT-X-SKIP:"):
            if match := _SKIPPED.match(line):
                msn += int(match[1])
        elif line.startswith("#EXT-X-PART:"):
            last, closed = (msn, index), False
            index += 1
        elif line.startswith("#EXT-X-PRELOAD-HINT:"):
            if match := _HINT.match(line):
                hint = relative_key(key, match[1])
        elif line and not line.startswith("#"):
            msn, index = msn + 1, 0
            if last is not None:
                closed = last[0] == msn - 1
    reload = None
    if last is not None:
        after = (last[0] + 1, 0) if closed else (last[0], last[1] + 1)
        skip = "&_HLS_skip=" + key.split("_HLS_skip=", 1)[1] if "_HLS_skip=" in key else ""
        reload = f"{base_key(key)}?_HLS_msn={after[0]}&_HLS_part={after[1]}{skip}"
    if hint is not None and posixpath.dirname(hint) != posixpath.dirname(base_key(key)):
        hint = None  # a hint elsewhere is no rendition of ours to fetch ahead
    return Ahead(reload, hint, part_target(text), last)


def _wanted(key: str) -> tuple[int, int] | None:
    """The part a blocking reload's key waits for; a whole segment (no _HLS_part) as the part
    after its last, which only a later segment's part is past."""
    directives = dict(item.partition("=")[::2] for item in key.partition("?")[2].split("&"))
    msn, part = directives.get("_HLS_msn", ""), directives.get("_HLS_part")
    if not msn.isdigit() or (part is not None and not part.isdigit()):
        return None
    return (int(msn), int(part)) if part is not None else (int(msn) + 1, -1)


class Newest:
    """Per live playlist (and _HLS_skip), the newest blocking answer the cache holds and the
    last part it lists. LL-HLS lets any playlist that holds the part asked for answer a blocking
    reload, so a viewer running behind is answered from it while it is fresh, instead of asking
    the origin again once the answer to its own key has expired: still one upstream request per
    part, however late some viewers are."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._table: OrderedDict[str, tuple[tuple[int, int], Entry]] = OrderedDict()

    @staticmethod
    def _group(key: str) -> str:
        return base_key(key) + ("?skip" if "_HLS_skip=" in key else "")

    def offer(self, key: str, entry: Entry, last: tuple[int, int] | None) -> None:
        if last is None:
            return
        group = self._group(key)
        held = self._table.get(group)
        if held is None or held[0] < last:
            self._table[group] = (last, entry)
            self._table.move_to_end(group)
            if len(self._table) > self._limit:
                self._table.popitem(last=False)

    def find(self, key: str, now: float) -> Entry | None:
        held = self._table.get(self._group(key))
        wanted = _wanted(key)
        if held is None or wanted is None or held[0] < wanted or not held[1].fresh(now):
            return None
        return held[1]

    def clear(self) -> None:
        self._table.clear()
