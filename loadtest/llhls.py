"""What a low-latency player reads in an LL-HLS media playlist: the last part, the preload hint,
each part's end on the wall clock (PROGRAM-DATE-TIME), PART-HOLD-BACK, the rendition reports,
and the blocking reload it asks for next (as hls.js computes it in low-latency mode: the next
part of the same segment, or part 0 of the next segment when the last part closed one)."""

from __future__ import annotations

import re
from datetime import datetime

_PART = re.compile(r'#EXT-X-PART:(?:.*?)DURATION=([0-9.]+)(?:.*?)URI="([^"]+)"')
_HINT = re.compile(r'#EXT-X-PRELOAD-HINT:(?:.*?)TYPE=PART(?:.*?)URI="([^"]+)"')
_REPORT = re.compile(r'#EXT-X-RENDITION-REPORT:URI="([^"]+)",LAST-MSN=(\d+),LAST-PART=(\d+)')
_HOLD = re.compile(r"PART-HOLD-BACK=([0-9.]+)")
_TARGET = re.compile(r"PART-TARGET=([0-9.]+)")
_SEQUENCE = re.compile(r"#EXT-X-MEDIA-SEQUENCE:(\d+)")
_SKIPPED = re.compile(r"#EXT-X-SKIP:SKIPPED-SEGMENTS=(\d+)")
_MAP = re.compile(r'#EXT-X-MAP:URI="([^"]+)"')


class LivePlaylist:
    """One answer of a live media playlist. Parts are (msn, index); URIs as written."""

    def __init__(self, text: str) -> None:
        if not text.startswith("#EXTM3U"):
            raise ValueError("not an HLS playlist")
        self.last: tuple[int, int] | None = None
        self.closed = False  # the last part's segment is complete
        self.hint: tuple[str, tuple[int, int]] | None = None
        self.init: str | None = None
        self.hold = float(m[1]) if (m := _HOLD.search(text)) else 1.0
        self.target = float(m[1]) if (m := _TARGET.search(text)) else 0.5
        self.ends: dict[tuple[int, int], float] = {}  # part -> its end, wall clock (PDT)
        self.uris: dict[tuple[int, int], str] = {}
        self.reports: dict[str, tuple[int, int]] = {}  # other rendition's URI -> its last part
        msn, index, clock, duration = 0, 0, None, 0.0
        for line in text.splitlines():
            if line.startswith("#EXT-X-PROGRAM-DATE-TIME:"):
                stamp = line.split(":", 1)[1].strip().replace("Z", "+00:00")
                clock = datetime.fromisoformat(stamp).timestamp()
            elif line.startswith("#EXT-X-PART:"):
                if m := _PART.match(line):
                    part = (msn, index)
                    if clock is not None:
                        clock += float(m[1])
                        self.ends[part] = clock
                    self.uris[part] = m[2]
                    self.last, self.closed = part, False
                    index += 1
            elif line.startswith("#EXTINF:"):
                duration = float(line[8:].split(",")[0] or 0)
            elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
                msn = int(m[1]) if (m := _SEQUENCE.match(line)) else msn
            elif line.startswith("#EXT-X-SKIP:"):
                msn += int(m[1]) if (m := _SKIPPED.match(line)) else 0
            elif line.startswith("#EXT-X-MAP:"):
                self.init = m[1] if (m := _MAP.match(line)) else None
            elif line.startswith("#EXT-X-PRELOAD-HINT:"):
                if m := _HINT.match(line):
                    self.hint = (m[1], (msn, index))
            elif line.startswith("#EXT-X-RENDITION-REPORT:"):
                if m := _REPORT.match(line):
                    self.reports[m[1]] = (int(m[2]), int(m[3]))
            elif line and not line.startswith("#"):
                if self.last is not None and self.last[0] == msn:
                    self.closed = True
                if index == 0 and clock is not None:
                    clock += duration  # a segment listed without its parts
                msn, index = msn + 1, 0

    def next(self) -> tuple[int, int] | None:
        """The part the next blocking reload asks for."""
        if self.last is None:
            return None
        return (self.last[0] + 1, 0) if self.closed else (self.last[0], self.last[1] + 1)

    def live_edge(self) -> float | None:
        """The wall-clock end of the newest part listed."""
        return self.ends.get(self.last) if self.last is not None else None
