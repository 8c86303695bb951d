"""Poster and storyboard (sprite sheets + a WebVTT thumbnails track) for scrubbing previews."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import av.filter

from packager.output import Output

TILE_LONG_SIDE = 160
GRID = 10  # 10 x 10 tiles a sheet
MAX_TILES = 200
POSTER_AT = 2.0  # seconds in, or a third of a shorter video


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def jpeg(frame: av.VideoFrame, width: int, height: int, quality: int = 4) -> bytes:
    enc = av.CodecContext.create("mjpeg", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuvj420p"
    enc.time_base = Fraction(1, 25)
    enc.options = {"qmin": str(quality), "qmax": str(quality)}
    picture = frame.reformat(width=width, height=height, format="yuvj420p")
    picture.pts = 0
    return b"".join(bytes(p) for p in [*enc.encode(picture), *enc.encode(None)])


def _timestamp(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"


class Thumbnails:
    """Takes upright pictures as they pass and writes thumbs/ when the video ends.

    Tiles are kept small (TILE_LONG_SIDE) until the end, so a chunk of a parallel job can hand
    its own to the job that assembles the sheets.
    """

    def __init__(self, width: int, height: int, duration: float | None, poster_size: tuple[int, int],
                 output: Output) -> None:
        scale = TILE_LONG_SIDE / max(width, height)
        self.tile = (_even(width * scale), _even(height * scale))
        self.interval = max(2.0, (duration or 0) / MAX_TILES)
        self.poster_at = min(POSTER_AT, (duration or 0) / 3)
        self.poster_size = poster_size
        self.output = output
        self.poster: bytes | None = None
        self.tiles: list[tuple[float, av.VideoFrame]] = []
        self._last: av.VideoFrame | None = None
        self._next_at = 0.0

    def offer(self, frame: av.VideoFrame, seconds: float) -> None:
        self._last = frame
        if self.poster is None and seconds >= self.poster_at:
            self.poster = jpeg(frame, *self.poster_size)
        if seconds >= self._next_at - 0.001:
            self._next_at = (math.floor(seconds / self.interval + 0.001) + 1) * self.interval
            tile = frame.reformat(width=self.tile[0], height=self.tile[1], format="yuv420p")
            self.tiles.append((seconds, tile))

    def take(self, other: Thumbnails) -> None:
        """Adopt a later chunk's poster (if still missing) and tiles."""
        self.poster = self.poster or other.poster
        self.tiles += other.tiles

    def finish(self, end: float) -> None:
        if self.poster is None and self._last is not None:
            self.poster = jpeg(self._last, *self.poster_size)  # a video shorter than POSTER_AT
        if self.poster is None:
            return
        self.output.write("thumbs/poster.jpg", self.poster)
        sheets = self._sheets()
        for index, sheet in enumerate(sheets, 1):
            self.output.write(f"thumbs/storyboard_{index:02d}.jpg", sheet)
        width, height = self.tile
        lines = ["WEBVTT", ""]
        for number, (start, _) in enumerate(self.tiles):
            stop = self.tiles[number + 1][0] if number + 1 < len(self.tiles) else max(end, start + 0.001)
            sheet, cell = divmod(number, GRID * GRID)
            x, y = cell % GRID * width, cell // GRID * height
            lines += [f"{_timestamp(start)} --> {_timestamp(stop)}",
                      f"storyboard_{sheet + 1:02d}.jpg#xywh={x},{y},{width},{height}", ""]
        self.output.write("thumbs/storyboard.vtt", "\n".join(lines).encode())

    def _sheets(self) -> list[bytes]:
        """Tiles in a grid (FFmpeg's tile filter), as JPEG sheets."""
        graph = av.filter.Graph()
        src = graph.add_buffer(width=self.tile[0], height=self.tile[1], format="yuv420p",
                               time_base=Fraction(1, 1))
        grid = graph.add("tile", f"{GRID}x{GRID}")
        sink = graph.add("buffersink")
        src.link_to(grid)
        grid.link_to(sink)
        graph.configure()
        sheets = []
        for number, (_, tile) in enumerate([*self.tiles, (0.0, None)]):
            if tile is not None:
                tile.pts, tile.time_base = number, Fraction(1, 1)
            graph.push(tile)
            while True:
                try:
                    sheet = graph.pull()
                except (av.error.BlockingIOError, av.error.EOFError):
                    break
                sheets.append(jpeg(sheet, sheet.width, sheet.height, quality=6))
        return sheets
