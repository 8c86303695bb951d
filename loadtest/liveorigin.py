"""A synthetic LL-HLS origin: parts made on a clock (or by hand, in tests), blocking reloads,
preload-hinted parts streamed as they grow, rendition reports, PROGRAM-DATE-TIME. The same
URL space and caching as the ingest's live server (packager/live/server.py), without an encoder:
the edge benchmark measures the edge, not ffmpeg, on a 2-core machine. As reel's live master,
it lists an AAC rendition (`a128`, an EXT-X-MEDIA TYPE=AUDIO group every variant names) cut at
the same instants as the video ones, with smaller parts; `--audio ""` for none.

    python -m loadtest.liveorigin --port 8490 [--part-target 0.333] [--renditions v720,v360] [--audio a128]

`requests` counts what it was asked, by path and query: what the edge passed upstream.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import email.utils
import re
import time
from datetime import UTC, datetime

from aiohttp import web

_PART = re.compile(r"part_(\d{1,9})_(\d{1,4})\.m4s")
_SEGMENT = re.compile(r"seg_(\d{1,9})\.m4s")
CORS = {"Access-Control-Allow-Origin": "*", "Access-Control-Expose-Headers": "Age, X-Cache"}
IMMUTABLE = "public, max-age=31536000, immutable"


class SyntheticLive:
    """One live stream of video `renditions` and an `audio` one (None: no audio), all cut at the
    same instants. Part g (global index) is segment g // per_segment, part g % per_segment;
    `done` parts are complete, part `done` grows (the preload hint) one of `chunks` chunks at a
    time."""

    def __init__(self, video_id: str = "celeb0001", renditions: tuple[str, ...] = ("v720", "v360"),
                 part_target: float = 1 / 3, per_segment: int = 6, part_bytes: int = 24_000,
                 chunks: int = 3, window: int = 6, audio: str | None = "a128") -> None:
        self.video_id, self.videos, self.audio = video_id, renditions, audio
        self.renditions = renditions + ((audio,) if audio else ())  # every media playlist served
        self.part_target, self.per_segment = part_target, per_segment
        self.part_bytes, self.chunks, self.window = part_bytes, chunks, window
        self.done = 0
        self.growing = 0  # chunks of part `done` written
        self.made_at: list[float] = []  # wall clock (time.time()) each part completed at
        self.wall_start = time.time()
        self.requests: collections.Counter[str] = collections.Counter()
        self._changed = asyncio.Event()

    @property
    def target_duration(self) -> int:
        return max(1, round(self.part_target * self.per_segment))

    # -- making parts --------------------------------------------------------------------------

    def grow(self) -> None:
        """One more chunk of the growing part; the last one completes it."""
        self.growing += 1
        if self.growing >= self.chunks:
            self.done += 1
            self.growing = 0
            self.made_at.append(time.time())
        self._changed.set()
        self._changed = asyncio.Event()

    async def run(self) -> None:
        """Grow parts on the clock, forever (cancel to stop), without drift."""
        self.wall_start = time.time()
        step, start, n = self.part_target / self.chunks, time.monotonic(), 0
        while True:
            n += 1
            await asyncio.sleep(max(0.0, start + n * step - time.monotonic()))
            self.grow()

    async def until(self, ready, within: float) -> bool:  # noqa: ANN001 - a predicate
        deadline = time.monotonic() + within
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except TimeoutError:
                return False
        return True

    # -- what it serves ------------------------------------------------------------------------

    def chunk(self, g: int, i: int, rendition: str) -> bytes:
        # audio: about 128 kb/s against the video's megabits
        size = (self.part_bytes // (8 if rendition == self.audio else 1)) // self.chunks
        tag = f"{rendition}:{g}:{i};".encode()
        return (tag * (size // len(tag) + 1))[:size]

    def part(self, g: int, rendition: str) -> bytes:
        return b"".join(self.chunk(g, i, rendition) for i in range(self.chunks))

    def pdt(self, g: int) -> str:
        at = datetime.fromtimestamp(self.wall_start + g * self.part_target, UTC)
        return at.isoformat(timespec="milliseconds").replace("+00:00", "Z")

    def master(self) -> str:
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", "#EXT-X-INDEPENDENT-SEGMENTS"]
        if self.audio:
            lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="Main",LANGUAGE="und",'
                         f'DEFAULT=YES,AUTOSELECT=YES,CHANNELS="2",URI="{self.audio}/index.m3u8"')
        for i, name in enumerate(self.videos):
            bandwidth = 3_000_000 // (i + 1)
            lines += [f'#EXT-X-STREAM-INF:BANDWIDTH={bandwidth},CODECS="avc1.64001f,mp4a.40.2"'
                      + (',AUDIO="audio"' if self.audio else ""), f"{name}/index.m3u8"]
        return "\n".join(lines) + "\n"

    def playlist(self, rendition: str) -> str:
        per, done = self.per_segment, self.done
        current = done // per  # the segment being made (its parts so far)
        first = max(0, current - self.window)
        t = self.part_target
        lines = ["#EXTM3U", "#EXT-X-VERSION:9", f"#EXT-X-TARGETDURATION:{self.target_duration}",
                 f"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={3 * t:.3f}",
                 f"#EXT-X-PART-INF:PART-TARGET={t:.3f}", f"#EXT-X-MEDIA-SEQUENCE:{first}",
                 '#EXT-X-MAP:URI="init.mp4"']
        for msn in range(first, current + 1):
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{self.pdt(msn * per)}")
            if msn >= current - 2:
                for index in range(per):
                    g = msn * per + index
                    if g >= done:
                        break
                    independent = ",INDEPENDENT=YES" if index == 0 else ""
                    lines.append(f'#EXT-X-PART:DURATION={t:.3f},URI="part_{msn}_{index}.m4s"{independent}')
            if msn < current:
                lines += [f"#EXTINF:{per * t:.3f},", f"seg_{msn}.m4s"]
        lines.append(f'#EXT-X-PRELOAD-HINT:TYPE=PART,URI="part_{done // per}_{done % per}.m4s"')
        last = done - 1
        for other in self.renditions:
            if other != rendition and last >= 0:
                lines.append(f'#EXT-X-RENDITION-REPORT:URI="../{other}/index.m3u8",'
                             f"LAST-MSN={last // per},LAST-PART={last % per}")
        return "\n".join(lines) + "\n"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path_qs] += 1
        parts = request.path.strip("/").split("/")
        if len(parts) == 3 and parts[2] == "master.m3u8" and parts[1] == self.video_id:
            return _m3u8(self.master(), "public, max-age=2")
        if len(parts) != 4 or parts[1] != self.video_id or parts[2] not in self.renditions:
            return _problem(404, "Not Found")
        rendition, name = parts[2], parts[3]
        if name == "index.m3u8":
            return await self._playlist(request, rendition)
        if name == "init.mp4":
            return _body(b"init:" + rendition.encode(), "video/mp4", IMMUTABLE)
        if match := _PART.fullmatch(name):
            return await self._part(request, rendition, int(match[1]) * self.per_segment + int(match[2]))
        if match := _SEGMENT.fullmatch(name):
            msn = int(match[1])
            if (msn + 1) * self.per_segment <= self.done:
                first = msn * self.per_segment
                body = b"".join(self.part(first + i, rendition) for i in range(self.per_segment))
                return _body(body, "video/iso.segment", IMMUTABLE)
        return _problem(404, "Not Found")

    async def _playlist(self, request: web.Request, rendition: str) -> web.Response:
        msn, part = request.query.get("_HLS_msn"), request.query.get("_HLS_part")
        if msn is None:
            return _m3u8(self.playlist(rendition), "public, max-age=0")
        if not msn.isdigit() or (part is not None and not part.isdigit()):
            return _problem(400, "Bad Request")
        g = int(msn) * self.per_segment + (int(part) if part is not None else 0)
        if part is None:
            g += self.per_segment - 1  # the whole segment
        if g > self.done + 2 * self.per_segment:
            return _problem(400, "Bad Request")
        if not await self.until(lambda: self.done > g, 3 * self.target_duration):
            return _problem(503, "Part Not Ready", retry=True)
        return _m3u8(self.playlist(rendition), "public, max-age=1")

    async def _part(self, request: web.Request, rendition: str, g: int) -> web.StreamResponse:
        cache = "public, max-age=30"
        if g > self.done + 2:
            return _problem(404, "Not Found")
        if not await self.until(lambda: self.done >= g, 3 * self.target_duration):
            return _problem(503, "Part Not Ready", retry=True)
        if g < self.done:
            return _body(self.part(g, rendition), "video/iso.segment", cache)
        # The part being written: chunk by chunk as it grows (chunked transfer).
        response = web.StreamResponse(headers={**CORS, "Content-Type": "video/iso.segment",
                                               "Cache-Control": cache})
        response.enable_chunked_encoding()
        await response.prepare(request)
        sent = 0
        while sent < self.chunks:
            have = self.chunks if self.done > g else self.growing
            while sent < have:
                await response.write(self.chunk(g, sent, rendition))
                sent += 1
            if sent < self.chunks and not await self.until(
                    lambda s=sent: self.done > g or self.growing > s, 3 * self.target_duration):
                request.transport.close() if request.transport else None
                return response
        await response.write_eof()
        return response


def _m3u8(text: str, cache: str) -> web.Response:
    return web.Response(body=text.encode(), headers={
        **CORS, "Content-Type": "application/vnd.apple.mpegurl", "Cache-Control": cache})


def _body(data: bytes, content_type: str, cache: str) -> web.Response:
    return web.Response(body=data, headers={**CORS, "Content-Type": content_type, "Cache-Control": cache,
                                            "Last-Modified": email.utils.formatdate(usegmt=True)})


def _problem(status: int, title: str, retry: bool = False) -> web.Response:
    headers = {**CORS, "Content-Type": "application/problem+json", "Cache-Control": "no-store"}
    if retry:
        headers["Retry-After"] = "1"
    return web.Response(status=status, text=f'{{"status": {status}, "title": "{title}"}}', headers=headers)


def app(*lives: SyntheticLive) -> web.Application:
    """The streams `lives` under /live/{video_id}/, with /healthz and /stats (the first's)."""
    live = lives[0]
    by_id = {stream.video_id: stream for stream in lives}

    async def handle(request: web.Request) -> web.StreamResponse:
        stream = by_id.get(request.match_info["video"])
        if stream is None:
            return _problem(404, "Not Found")
        return await stream.handle(request)

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"done": live.done, "requests": dict(live.requests)})

    application = web.Application()
    application.router.add_get("/healthz", healthz)
    application.router.add_get("/stats", stats)
    application.router.add_get("/live/{video}/{tail:.*}", handle)
    return application


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8490)
    parser.add_argument("--video", default="celeb0001", help="video ids, comma-separated")
    parser.add_argument("--renditions", default="v720,v360", help="video renditions")
    parser.add_argument("--audio", default="a128", help='the audio rendition ("": none)')
    parser.add_argument("--part-target", type=float, default=1 / 3)
    args = parser.parse_args()
    lives = [SyntheticLive(video, tuple(args.renditions.split(",")), args.part_target,
                           audio=args.audio or None) for video in args.video.split(",")]

    async def clock(_: web.Application):  # noqa: ANN202
        tasks = [asyncio.create_task(live.run()) for live in lives]
        yield
        for task in tasks:
            task.cancel()

    application = app(*lives)
    application.cleanup_ctx.append(clock)
    web.run_app(application, host="127.0.0.1", port=args.port, print=None, access_log=None,
                # thousands of direct viewers connect at once: aiohttp's default is 128
                backlog=4096)


if __name__ == "__main__":
    main()
