"""One live rendition's timeline (segments and their parts) and its LL-HLS media playlist
(RFC 8216bis section 4.4.3.7-4.4.5, 6.2.5.2). Pure data: no I/O, no asyncio, no threads."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from packager.live.config import Cadence, LiveConfig

VERSION = 9  # EXT-X-SKIP needs version 9


def part_uri(msn: int, index: int) -> str:
    return f"part_{msn:05d}_{index}.m4s"


def segment_uri(msn: int) -> str:
    return f"seg_{msn:05d}.m4s"


@dataclass(frozen=True)
class Part:
    """A CMAF chunk (moof+mdat) as the encoding thread hands it over."""

    msn: int
    index: int
    duration: float
    independent: bool
    data: bytes
    start: float  # seconds on the stream's timeline
    last: bool = False  # closes its segment
    key_offset: int = 0  # where its moof starts, and the bytes to the end of its first sample:
    key_length: int = 0  # the byte range of a segment's IDR, for I-frame playlists

    @property
    def uri(self) -> str:
        return part_uri(self.msn, self.index)


@dataclass
class Segment:
    msn: int
    start: float
    wall: float = 0.0  # its PROGRAM-DATE-TIME (epoch seconds)
    discontinuity: bool = False  # the first of a publisher that came back (EXT-X-DISCONTINUITY)
    dsn: int = 0  # its discontinuity sequence number: discontinuities up to and including it
    parts: list[Part] = field(default_factory=list)
    duration: float = 0.0
    size: int = 0
    key_offset: int = 0
    key_length: int = 0
    complete: bool = False
    data: bytes | None = None  # kept while the segment is among the newest few

    @property
    def uri(self) -> str:
        return segment_uri(self.msn)


@dataclass(frozen=True)
class Report:
    """Where another rendition is (EXT-X-RENDITION-REPORT)."""

    uri: str
    last_msn: int
    last_part: int


class Timeline:
    """A rendition's segments within the DVR window: the completed ones, then the one being
    written (its parts so far). Parts' bytes are kept for the newest `memory_segments` only.

    A publisher that drops and comes back continues the same timeline: media times and sequence
    numbers go on, the first segment after the gap carries EXT-X-DISCONTINUITY, and its
    PROGRAM-DATE-TIME restarts from the wall clock (`discontinue`)."""

    def __init__(self, cadence: Cadence, config: LiveConfig, wall_start: float) -> None:
        self.cadence, self.config, self.wall_start = cadence, config, wall_start
        self.segments: deque[Segment] = deque()
        self.ended = False
        self.away = False  # the publisher went and may come back: no part is coming for now
        self._duration = 0.0  # of the completed segments in the window
        self.growing: tuple[int, int] | None = None  # the part being written, chunk by chunk
        self._growing_data = bytearray()
        self._discontinuity = False  # the next segment starts after a gap
        self._dsn = 0

    def discontinue(self, wall_start: float) -> None:
        """The publisher came back: the next segment is discontinuous, its wall clock anew
        (`wall_start`: the epoch of media time 0 on the new publisher's clock)."""
        self.wall_start = wall_start
        self.away = False
        self.growing, self._growing_data = None, bytearray()
        self._discontinuity = bool(self.segments)

    def grow(self, msn: int, index: int, chunk: bytes) -> None:
        """A chunk of the part being written (it is listed once complete, by `add`)."""
        if self.growing != (msn, index):
            self.growing, self._growing_data = (msn, index), bytearray()
        self._growing_data += chunk

    def partial(self, msn: int, index: int) -> bytes | None:
        """What exists of part (msn, index) while it is being written."""
        return bytes(self._growing_data) if self.growing == (msn, index) else None

    def add(self, part: Part) -> Segment | None:
        """Append a part; returns its segment when the part completes it."""
        if self.growing == (part.msn, part.index):
            self.growing, self._growing_data = None, bytearray()
        if self.segments and not self.segments[-1].complete and self.segments[-1].msn != part.msn:
            self.seal()  # its publisher went between two parts: it ended with the last one
        if not self.segments or self.segments[-1].complete:
            discontinuity, self._discontinuity = self._discontinuity, False
            self._dsn += discontinuity
            self.segments.append(Segment(part.msn, part.start, self.wall_start + part.start,
                                         discontinuity, self._dsn))
        segment = self.segments[-1]
        segment.parts.append(part)
        return self.seal() if part.last else None

    def seal(self) -> Segment | None:
        """Complete the segment being written with the parts it has (its publisher went);
        returns it, or None when there was none."""
        if not self.segments or self.segments[-1].complete or not self.segments[-1].parts:
            return None
        segment = self.segments[-1]
        segment.complete = True
        segment.data = b"".join(p.data for p in segment.parts)
        segment.duration = sum(p.duration for p in segment.parts)
        segment.size = len(segment.data)
        segment.key_offset = segment.parts[0].key_offset
        segment.key_length = segment.parts[0].key_length
        self._trim()
        return segment

    def _trim(self) -> None:
        """Bytes out of memory past the newest few segments; records out past the DVR window."""
        self._duration += self.segments[-1].duration
        aged = len(self.segments) - 1 - self.config.memory_segments
        if aged >= 0 and self.segments[aged].data is not None:
            old = self.segments[aged]
            old.data = None
            old.parts = [replace(p, data=b"") for p in old.parts]
        while len(self.segments) > 2 and self._duration > self.config.dvr_seconds + 0.001:
            self._duration -= self.segments.popleft().duration

    # --- what exists -------------------------------------------------------------------------

    @property
    def first_msn(self) -> int:
        return self.segments[0].msn if self.segments else 0

    def last(self) -> tuple[int, int] | None:
        """(msn, part index) of the newest part, or None before the first."""
        if not self.segments:
            return None
        newest = self.segments[-1]
        return newest.msn, newest.parts[-1].index

    def next_part(self) -> tuple[int, int]:
        last = self.last()
        if last is None:
            return 0, 0
        msn, index = last
        if self.segments[-1].complete:
            return msn + 1, 0
        return msn, index + 1

    def has(self, msn: int, part: int | None) -> bool:
        """Whether the playlist now holds segment `msn` (complete), or part `part` of it."""
        last = self.last()
        if last is None:
            return False
        if part is None:
            done = self.segments[-1].msn if self.segments[-1].complete else self.segments[-1].msn - 1
            return done >= msn
        return last >= (msn, part)

    def find(self, msn: int) -> Segment | None:
        if not self.segments or msn < self.first_msn:
            return None
        index = msn - self.first_msn
        return self.segments[index] if index < len(self.segments) else None

    def part(self, msn: int, index: int) -> Part | None:
        segment = self.find(msn)
        if segment is None or index >= len(segment.parts):
            return None
        return segment.parts[index]

    # --- the playlist --------------------------------------------------------------------------

    def server_control(self) -> str:
        target = self.cadence.target_duration
        part_target = self.cadence.part_target
        return (f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,CAN-SKIP-UNTIL={6 * target:.1f},"
                f"PART-HOLD-BACK={self.config.hold_back_parts * part_target:.3f},"
                f"HOLD-BACK={3 * target:.1f}")

    def skippable(self) -> int:
        """How many of the oldest segments a delta update leaves out: all but those within
        CAN-SKIP-UNTIL of the playlist's end."""
        keep_from = len(self.segments)
        covered = 0.0
        limit = 6 * self.cadence.target_duration
        while keep_from > 0 and covered < limit:
            keep_from -= 1
            covered += self.segments[keep_from].duration
        return keep_from

    def render(self, skip: bool = False, reports: list[Report] | None = None) -> str:
        lines = [
            "#EXTM3U", f"#EXT-X-VERSION:{VERSION}",
            f"#EXT-X-TARGETDURATION:{self.cadence.target_duration}",
            self.server_control(),
            f"#EXT-X-PART-INF:PART-TARGET={self.cadence.part_target:.3f}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.first_msn}",
            *self._discontinuity_sequence(),
            '#EXT-X-MAP:URI="init.mp4"',
        ]
        skipped = self.skippable() if skip else 0
        if skipped:
            lines.append(f"#EXT-X-SKIP:SKIPPED-SEGMENTS={skipped}")
        parts_from = self._parts_from()
        for position, segment in enumerate(self.segments):
            if position >= skipped:
                lines += self._segment_lines(segment, with_parts=position >= parts_from,
                                             first=position == 0)
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        elif not self.away:  # while the publisher is away, no hint at a part not coming
            msn, index = self.next_part()
            lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="{part_uri(msn, index)}"')
        for report in reports or []:
            lines.append(f'#EXT-X-RENDITION-REPORT:URI="{report.uri}",'
                         f"LAST-MSN={report.last_msn},LAST-PART={report.last_part}")
        return "\n".join(lines) + "\n"

    def _parts_from(self) -> int:
        """Parts are listed for the segments within three target durations of the end
        (RFC 8216bis 4.4.4.9: older parts SHOULD be removed)."""
        position, covered = len(self.segments), 0.0
        while position > 0 and covered < 3 * self.cadence.target_duration:
            position -= 1
            covered += self.segments[position].duration
        return position

    def _discontinuity_sequence(self) -> list[str]:
        """The first listed segment's discontinuity sequence number (RFC 8216bis 4.4.3.3), which
        counts its own discontinuity: that tag is not repeated on it. A delta update names the
        first segment of the whole playlist, skipped ones included, as MEDIA-SEQUENCE does."""
        dsn = self.segments[0].dsn if self.segments else 0
        return [f"#EXT-X-DISCONTINUITY-SEQUENCE:{dsn}"] if dsn else []

    def _segment_lines(self, segment: Segment, with_parts: bool, first: bool) -> list[str]:
        lines = ["#EXT-X-DISCONTINUITY"] if segment.discontinuity and not first else []
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.wall)}")
        if with_parts or not segment.complete:
            for p in segment.parts:
                independent = ",INDEPENDENT=YES" if p.independent else ""
                lines.append(f'#EXT-X-PART:DURATION={p.duration:.5f},URI="{p.uri}"{independent}')
        if segment.complete:
            lines += [f"#EXTINF:{segment.duration:.5f},", segment.uri]
        return lines

    def render_plain(self) -> str:
        """The same window as plain (RFC 8216) live HLS, for stores and players without LL:
        completed segments only."""
        lines = ["#EXTM3U", "#EXT-X-VERSION:7",
                 f"#EXT-X-TARGETDURATION:{self.cadence.target_duration}",
                 f"#EXT-X-MEDIA-SEQUENCE:{self.first_msn}", *self._discontinuity_sequence(),
                 '#EXT-X-MAP:URI="init.mp4"']
        for position, segment in enumerate(self.segments):
            if segment.complete:
                if segment.discontinuity and position > 0:
                    lines.append("#EXT-X-DISCONTINUITY")
                lines += [f"#EXT-X-PROGRAM-DATE-TIME:{program_date_time(segment.wall)}",
                          f"#EXTINF:{segment.duration:.5f},", segment.uri]
        if self.ended:
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"


def program_date_time(epoch: float) -> str:
    stamp = datetime.fromtimestamp(math.floor(epoch * 1000) / 1000, UTC)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")
