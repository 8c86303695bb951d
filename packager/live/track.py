"""Cutting one track's encoded samples into CMAF parts, on the encoding thread.

Samples arrive in decode order, which is presentation order (the live encoders make no
B-frames), each labelled with the grid part it falls in. A part is written with its last sample
when that is known to be the last (pictures, on the frame grid), else when the first sample of
the next part arrives (audio; a picture dropped for a lane that was behind). Decode times stay on the
stream's timeline (`tfdt` = ticks since the first picture), so every rendition's part N starts at
the same time and a player switches at any part.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from packager import cmaf
from packager.live.playlist import Part

SegmentDone = Callable[[int, cmaf.Fragment, float], None]
ChunkDone = Callable[[int, int, bytes], None]  # (msn, part index, a CMAF chunk of that part)


@dataclass
class _Sample:
    data: bytes
    pts: int
    sync: bool


@dataclass
class PartWriter:
    """Gathers one track's samples and hands each finished part to `emit` (from this thread).

    With `on_chunk`, a part is written a sample at a time, each a CMAF chunk (moof+mdat) handed
    over as soon as its duration is known, so a server can stream the part while it grows; the
    part is then those chunks end to end."""

    track: cmaf.Track
    emit: Callable[[Part], None]
    frame_ticks: int  # the duration of the very last sample, at the end of the stream
    # Each whole segment as one fragment (one moof), for the VOD the stream becomes.
    on_segment: SegmentDone | None = None
    on_chunk: ChunkDone | None = None
    _pending: list[_Sample] = field(default_factory=list)
    _grid: tuple[int, int] = (-1, -1)  # (segment, part) on the stream's grid of what is pending
    _msn: int = -1
    _index: int = 0
    _fragments: int = 0
    _segment: list[cmaf.Sample] = field(default_factory=list)
    _segment_start: int = 0
    _segment_end: int = 0
    _chunks: list[cmaf.Fragment] = field(default_factory=list)  # of the pending part, sent
    _sent: int = 0  # pending samples already in a chunk

    def add(self, data: bytes, pts: int, sync: bool, grid: tuple[int, int],
            end: int | None = None, last: bool = False) -> None:
        """`grid`: the (segment, part) numbers this sample's time falls in. `end`: this sample
        is known to be its part's last, which ends there (and its segment too, if `last`), so
        the part goes out now rather than when the next one starts."""
        if self._pending and grid != self._grid:
            self._flush(end=pts, last=grid[0] != self._grid[0])
        if not self._pending:
            self._open(grid)
        elif self.on_chunk is not None:
            self._send(self._samples(pts)[self._sent:])  # the one before: its length is known
        self._pending.append(_Sample(data, pts, sync))
        if end is not None:
            self._flush(end=end, last=last)

    def _open(self, grid: tuple[int, int]) -> None:
        if grid[0] != self._grid[0]:
            # Segments are numbered on from the first one's grid position (audio that starts
            # late starts at the video's segment number), then one by one.
            self._msn = grid[0] if self._msn < 0 else self._msn + 1
            self._index = 0
        else:
            self._index += 1
        self._grid = grid

    def close(self) -> None:
        """The stream ended: the pending samples are the last part of the last segment (or,
        when the last part went out whole already, that segment ends with it)."""
        if self._pending:
            self._flush(end=self._pending[-1].pts + self.frame_ticks, last=True)
        elif self._segment and self.on_segment is not None:
            end = self._segment_end
            fragment = cmaf.media_segment(self.track, self._msn + 1, self._segment_start,
                                          self._segment)
            self.on_segment(self._msn, fragment, (end - self._segment_start) / self.track.timescale)
            self._segment = []

    def _samples(self, end: int) -> list[cmaf.Sample]:
        """The pending samples, each lasting to the next one's start (the last, to `end`)."""
        times = [s.pts for s in self._pending] + [end]
        return [cmaf.Sample(s.data, times[i + 1] - s.pts, 0, s.sync)
                for i, s in enumerate(self._pending)]

    def _fragment(self, samples: list[cmaf.Sample], decode_time: int) -> cmaf.Fragment:
        self._fragments += 1
        return cmaf.media_segment(self.track, self._fragments, decode_time, samples,
                                  styp=self._index == 0 and not self._chunks)

    def _send(self, samples: list[cmaf.Sample]) -> None:
        if not samples:
            return
        decode_time = self._pending[self._sent].pts
        self._chunks.append(self._fragment(samples, decode_time))
        self._sent += len(samples)
        assert self.on_chunk is not None
        self.on_chunk(self._msn, self._index, self._chunks[-1].data)

    def _flush(self, end: int, last: bool) -> None:
        samples, start = self._samples(end), self._pending[0].pts
        if self.on_chunk is not None:
            self._send(samples[self._sent:])
            chunks = self._chunks
        else:
            chunks = [self._fragment(samples, start)]
        scale = self.track.timescale
        self.emit(Part(self._msn, self._index, (end - start) / scale, samples[0].sync,
                       b"".join(c.data for c in chunks), start / scale, last,
                       chunks[0].key_offset, chunks[0].key_length))
        self._pending, self._chunks, self._sent = [], [], 0
        if self.on_segment is not None:
            self._whole(samples, start, end, last)

    def _whole(self, samples: list[cmaf.Sample], start: int, end: int, last: bool) -> None:
        if self._index == 0:
            self._segment, self._segment_start = [], start
        self._segment += samples
        self._segment_end = end
        if last and self.on_segment is not None:
            fragment = cmaf.media_segment(self.track, self._msn + 1, self._segment_start,
                                          self._segment)
            self.on_segment(self._msn, fragment, (end - self._segment_start) / self.track.timescale)
            self._segment = []
