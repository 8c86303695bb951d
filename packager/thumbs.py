"""Poster and storyboard (sprite sheets + a WebVTT thumbnails track) for scrubbing previews."""

from __future__ import annotations

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
    """Takes upright pictures as they pass and writes thumbs/ when the video ends."""

    def __init__(self, width: int, height: int, duration: float | None, poster_size: tuple[int, int],
                 output: Output) -> None:
        scale = TILE_LONG_SIDE / max(width, height)
        self.tile = (_even(width * scale), _even(height * scale))
        self.interval = max(2.0, (duration or 0) / MAX_TILES)
        self.poster_at = min(POSTER_AT, (duration or 0) / 3)
        self.poster_size = poster_size
        self.output = output
        self._poster: av.VideoFrame | None = None
        self._last: av.VideoFrame | None = None
        self._next_at = 0.0
        self._cues: list[tuple[float, int]] = []  # (time, tile number)
        self._sheets: list[bytes] = []
        self._graph: av.filter.Graph | None = None

    def offer(self, frame: av.VideoFrame, seconds: float) -> None:
        self._last = frame
        if self._poster is None and seconds >= self.poster_at:
            self._poster = frame
        if seconds >= self._next_at:
            self._next_at = seconds + self.interval
            self._cues.append((seconds, len(self._cues)))
            self._push(frame.reformat(width=self.tile[0], height=self.tile[1], format="yuv420p"))

    def _push(self, tile: av.VideoFrame | None) -> None:
        if self._graph is None:
            graph = av.filter.Graph()
            src = graph.add_buffer(width=self.tile[0], height=self.tile[1], format="yuv420p",
                                   time_base=Fraction(1, 1))
            grid = graph.add("tile", f"{GRID}x{GRID}")
            sink = graph.add("buffersink")
            src.link_to(grid)
            grid.link_to(sink)
            graph.configure()
            self._graph = graph
        if tile is not None:
            tile.pts, tile.time_base = len(self._cues), Fraction(1, 1)
        self._graph.push(tile)
        while True:
            try:
                sheet = self._graph.pull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self._sheets.append(jpeg(sheet, sheet.width, sheet.height, quality=6))

    def finish(self, end: float) -> None:
        poster = self._poster or self._last
        if poster is None:
            return
        self.output.write("thumbs/poster.jpg", jpeg(poster, *self.poster_size))
        self._push(None)
        for index, sheet in enumerate(self._sheets, 1):
            self.output.write(f"thumbs/storyboard_{index:02d}.jpg", sheet)
        width, height = self.tile
        lines = ["WEBVTT", ""]
        for i, (start, number) in enumerate(self._cues):
            stop = self._cues[i + 1][0] if i + 1 < len(self._cues) else max(end, start + 0.001)
            sheet, cell = divmod(number, GRID * GRID)
            x, y = cell % GRID * width, cell // GRID * height
            lines += [f"{_timestamp(start)} --> {_timestamp(stop)}",
                      f"storyboard_{sheet + 1:02d}.jpg#xywh={x},{y},{width},{height}", ""]
        self.output.write("thumbs/storyboard.vtt", "\n".join(lines).encode())
