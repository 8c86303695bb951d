"""Serving live streams from memory: `/live/{video_id}/...` as LL-HLS, with blocking reloads.

A blocking request (`_HLS_msn`, `_HLS_part`) is held until that part exists, woken by the
stream's Changes (never polled), and answered in the loop iteration the part arrives in; 503
after three target durations, 400 when malformed or more than two segments ahead. A request for
the preload-hinted part waits for its first chunk, then streams it chunk by chunk (chunked
transfer) as the encoder writes it. What memory no longer holds (older segments of the DVR
window) comes from the object store when one is given.

Caching (DESIGN.md's HTTP conventions): init and segments immutable; parts for as long as memory
keeps them; a blocking playlist answer for a second (its URL names a state the stream never goes
back from), a plain reload not at all (it changes every part); the master for two seconds.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from origin.layout import Key, parse_key
from origin.store import Store
from packager.live.playlist import Timeline
from packager.live.stream import LiveStream, Rendition
from reel.http import (
    CORS,
    PREFLIGHT,
    Unsatisfiable,
    if_range_ok,
    not_modified,
    parse_range,
    problem,
    raw_path_safe,
)

IMMUTABLE = "public, max-age=31536000, immutable"
MASTER = "public, max-age=2"
# A blocking answer names a state the stream never goes back from: about one part is fine.
BLOCKING = "public, max-age=1"
# A plain reload names "now", which changes every part (a third of a second).
RELOAD = "public, max-age=0"
START_WAIT = 10.0  # seconds a request for a stream that is starting may wait for its first part
_NUMBER = re.compile(r"\d{1,9}")
_PART = re.compile(r"part_(\d{1,9})_(\d{1,4})\.m4s")
_SEGMENT = re.compile(r"seg_(\d{1,9})\.m4s")


class BadRequest(ValueError):
    pass


@dataclass(frozen=True)
class Blocking:
    """The LL-HLS delivery directives of a playlist request."""

    msn: int | None = None
    part: int | None = None
    skip: bool = False

    @classmethod
    def parse(cls, query: dict[str, str]) -> Blocking:
        def number(name: str) -> int | None:
            value = query.get(name)
            if value is None:
                return None
            if not _NUMBER.fullmatch(value):
                raise BadRequest(f"{name} must be a non-negative integer")
            return int(value)

        msn, part, skip = number("_HLS_msn"), number("_HLS_part"), query.get("_HLS_skip")
        if part is not None and msn is None:
            raise BadRequest("_HLS_part without _HLS_msn")
        if skip not in (None, "YES", "v2"):
            raise BadRequest("_HLS_skip must be YES or v2")
        return cls(msn, part, skip is not None)


class LiveHandler:
    """GET/HEAD/OPTIONS under /live/. `streams`: the live streams by video id, as ingest keeps
    them; `store`: where completed segments went, for the part of the window no longer in memory."""

    def __init__(self, streams: dict[str, LiveStream], store: Store | None = None) -> None:
        self.streams = streams
        self.store = store

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.method == "OPTIONS":
            return web.Response(status=204, headers={**CORS, **PREFLIGHT})
        if request.method not in ("GET", "HEAD"):
            return _problem(405, "Method Not Allowed")
        key = parse_key(request.path.removeprefix("/")) if raw_path_safe(request) else None
        if key is None or key.space != "live":
            return _problem(404, "Not Found")
        stream = self.streams.get(key.owner)
        if stream is None:
            return await self._from_store(request, key)
        relative = key.path.split("/", 2)[2]
        if relative == "master.m3u8":
            return await self._master(stream)
        if "/" not in relative:
            return _problem(404, "Not Found")
        name, file = relative.split("/")
        if not await _until(stream, lambda: stream.cadence is not None, START_WAIT) or \
                name not in stream.renditions:
            return _problem(404, "Not Found")
        return await self._file(request, key, stream, stream.renditions[name], file)

    async def _file(self, request: web.Request, key: Key, stream: LiveStream,
                    rendition: Rendition, file: str) -> web.StreamResponse:
        if file == "index.m3u8":
            return await self._playlist(request, stream, rendition)
        if file == "init.mp4":
            if not await _until(stream, lambda: rendition.init is not None, START_WAIT):
                return _problem(503, "Stream Not Started", retry=True)
            return _body(request, rendition.init or b"", "video/mp4", IMMUTABLE)
        if match := _PART.fullmatch(file):
            return await self._part(request, stream, rendition, int(match[1]), int(match[2]))
        if match := _SEGMENT.fullmatch(file):
            segment = rendition.timeline.find(int(match[1]))
            if segment is not None and segment.data is not None:
                return _body(request, segment.data, "video/iso.segment", IMMUTABLE)
            if segment is not None and segment.complete:
                return await self._from_store(request, key)
        return _problem(404, "Not Found")

    async def _master(self, stream: LiveStream) -> web.StreamResponse:
        if not await _until(stream, lambda: stream.master is not None, START_WAIT):
            return _problem(503, "Stream Not Started", retry=True)
        return _m3u8(stream.master or "", MASTER)

    async def _playlist(self, request: web.Request, stream: LiveStream,
                        rendition: Rendition) -> web.StreamResponse:
        try:
            wanted = Blocking.parse(dict(request.query))
        except BadRequest as exc:
            return _problem(400, "Bad Request", str(exc))
        timeline = rendition.timeline
        assert stream.cadence is not None
        hold = 3 * stream.cadence.target_duration
        if rendition.dropped and not timeline.ended:
            # Given up to keep real time: it will never hold another part. Any reload, plain or
            # blocking, is refused, so players move to another rendition on the error (the master
            # no longer lists it); a frozen playlist for plain reloads kept hls.js on the rung,
            # stalled, for the rest of the stream (loadtest/bench_live).
            return _problem(404, "Not Found", "rendition dropped to keep up with real time")
        if wanted.msn is None:
            ready = await _until(stream, lambda: timeline.last() is not None, START_WAIT)
        else:
            msn, part = wanted.msn, wanted.part
            if part is not None and part >= stream.cadence.segment_parts:
                msn, part = msn + 1, 0  # past a segment's last part: the next one's first
            if msn > timeline.next_part()[0] + 2:
                return _problem(400, "Bad Request", "_HLS_msn is more than two segments ahead")
            ready = await _until(stream, lambda: timeline.has(msn, part) or timeline.ended
                                 or rendition.dropped, hold)
            if rendition.dropped and not timeline.has(msn, part):
                return _problem(404, "Not Found", "rendition dropped to keep up with real time")
        if not ready and not stream.paused:
            return _problem(503, "Part Not Ready", retry=True)
        text = stream.playlist(rendition.name, skip=wanted.skip)
        # While the publisher is away (its grace period), a blocking reload is answered with the
        # playlist as it is after the hold, uncached: players keep reloading without counting
        # errors toward giving up, and see the next part as soon as a publisher continues.
        cache = BLOCKING if wanted.msn is not None and ready else RELOAD
        return _m3u8(text, cache)

    async def _part(self, request: web.Request, stream: LiveStream, rendition: Rendition,
                    msn: int, index: int) -> web.StreamResponse:
        """A part, or the preload-hinted one: held until it starts, then streamed as it grows."""
        timeline = rendition.timeline
        assert stream.cadence is not None
        if msn > timeline.next_part()[0] + 2:
            return _problem(404, "Not Found")

        def settled() -> bool:  # it exists, is being written, or never will be
            last = timeline.last()
            return timeline.part(msn, index) is not None or timeline.growing == (msn, index) \
                or timeline.ended or rendition.dropped or (last is not None and last > (msn, index))

        if not await _until(stream, settled, 3 * stream.cadence.target_duration):
            return _problem(503, "Part Not Ready", retry=True)
        cache = f"public, max-age={stream.config.memory_segments * stream.cadence.target_duration}"
        part = timeline.part(msn, index)
        if part is None and timeline.growing == (msn, index):
            return await _stream_part(request, stream, timeline, msn, index, cache)
        if part is None or not part.data:
            return _problem(404, "Not Found")
        return _body(request, part.data, "video/iso.segment", cache)

    async def _from_store(self, request: web.Request, key: Key) -> web.StreamResponse:
        if self.store is None or key.kind not in ("segment", "init", "playlist"):
            return _problem(404, "Not Found")
        info = await self.store.stat(key.path)
        if info is None:
            return _problem(404, "Not Found")
        cache = IMMUTABLE if key.immutable else RELOAD
        response = web.StreamResponse(headers={**CORS, "Content-Type": key.content_type,
                                               "Cache-Control": cache, "ETag": info.etag})
        response.content_length = info.size
        await response.prepare(request)
        if request.method != "HEAD":
            async for chunk in self.store.read(key.path):
                await response.write(chunk)
        await response.write_eof()
        return response


async def _stream_part(request: web.Request, stream: LiveStream, timeline: Timeline, msn: int,
                       index: int, cache: str) -> web.StreamResponse:
    """The part being written, chunk by chunk as the encoder makes them (chunked transfer),
    to its end. A stream that stalls mid-part cuts the response short: the player retries."""
    response = web.StreamResponse(headers={**CORS, "Content-Type": "video/iso.segment",
                                           "Cache-Control": cache})
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0

    def data() -> bytes | None:
        part = timeline.part(msn, index)
        return part.data if part is not None else timeline.partial(msn, index)

    while request.method != "HEAD":
        now = data()
        if now is None or len(now) < sent:
            return _cut(request, response)  # gone from memory: never completed here
        if len(now) > sent:
            await response.write(now[sent:])
            sent = len(now)
        if timeline.part(msn, index) is not None:
            break
        assert stream.cadence is not None
        if not await _until(stream, lambda seen=sent: len(data() or b"") != seen or timeline.ended,
                            stream.cadence.target_duration * 3):
            return _cut(request, response)
    await response.write_eof()
    return response


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """End a streamed body unfinished: the connection closes without the last chunk, so the
    client knows the part is incomplete (a clean end would pass a truncated part for whole)."""
    if request.transport is not None:
        request.transport.close()
    return response


async def _until(stream: LiveStream, ready: Callable[[], bool], within: float) -> bool:
    if ready():
        return True
    if stream.changes is None:
        return False
    return await stream.changes.until(ready, within)


def _m3u8(text: str, cache: str) -> web.Response:
    return web.Response(body=text.encode(), headers={
        **CORS, "Content-Type": "application/vnd.apple.mpegurl", "Cache-Control": cache})


def _problem(status: int, title: str, detail: str | None = None,
             retry: bool = False) -> web.Response:
    headers = {**CORS, **({"Retry-After": "1"} if retry else {})}
    return problem(status, title, detail=detail, headers=headers)


def _body(request: web.Request, data: bytes, content_type: str, cache: str) -> web.Response:
    """Bytes from memory with a strong ETag, conditionals and single byte ranges."""
    etag = '"' + hashlib.blake2b(data, digest_size=12).hexdigest() + '"'
    headers = {**CORS, "Cache-Control": cache, "ETag": etag, "Accept-Ranges": "bytes",
               "Content-Type": content_type}
    if not_modified(request, etag, None):
        return web.Response(status=304, headers=headers)
    try:
        span = parse_range(request.headers.get("Range"), len(data)) \
            if if_range_ok(request, etag, None) else None
    except Unsatisfiable:
        return web.Response(status=416, headers={**headers, "Content-Range": f"bytes */{len(data)}"})
    status, body = 200, data
    if span is not None:
        status, body = 206, data[span[0]:span[1]]
        headers["Content-Range"] = f"bytes {span[0]}-{span[1] - 1}/{len(data)}"
    return web.Response(status=status, body=None if request.method == "HEAD" else body,
                        headers=headers)


def live_app(streams: dict[str, LiveStream], store: Store | None = None) -> web.Application:
    """An app serving `streams` under /live/ (and CORS preflights)."""
    app = web.Application()
    handler = LiveHandler(streams, store)
    app.router.add_route("*", "/live/{tail:.*}", handler.handle)
    return app

