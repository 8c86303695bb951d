"""Warming what a feed shows next: the edge a viewer will play from fetches the first segments
of the first videos of their feed before they swipe to them.

Control knows no edge by region; geo does. So for a feed served to a viewer, control asks geo
where that viewer's master playlist would be sent (GET /vod/{id}/master.m3u8 with the viewer's
address in X-Forwarded-For; geo must trust control as a proxy, as `reel up` sets it) and reads
the edge from the redirect. It then asks that edge for the master and the start rendition's
playlist (so they are cached too), and for the rendition's init segment with CMCD
`nor` naming the first media segment: the edge's own prefetcher then brings that segment in
(edge/node.py `_look_ahead`), marked as prefetched, and the viewer's first request for it is a HIT.

All of it happens beside the response, never before it: bounded in tasks (`max_running`; past it
a feed is simply not warmed), in time (`timeout` on every call), and in repeats (an edge is asked
for a video at most once per `remember_seconds`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from urllib.parse import urljoin, urlsplit

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from control.videos import Video
from reel.logs import fields

log = logging.getLogger("reel.control.warm")


class FeedWarmer:
    """`start()`, then `warm(address, videos)` per feed served, `close()` at the end."""

    def __init__(self, geo_url: str, registry: CollectorRegistry, *, first: int = 3,
                 timeout: float = 3.0, max_running: int = 16, remember_seconds: float = 30.0,
                 remember: int = 10_000) -> None:
        self.geo_url = geo_url.rstrip("/")
        self.first = first
        self.timeout = timeout
        self.max_running = max_running
        self.remember_seconds = remember_seconds
        self.remember = remember
        self.warmed = Counter("reel_control_feed_warm_total",
                              "Feed videos an edge was asked to fetch ahead, by result "
                              "(asked, recent, skipped, failed)", ["result"], registry=registry)
        self._http: aiohttp.ClientSession | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._recent: dict[tuple[str, str], float] = {}  # (edge, video) -> when asked

    def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None

    def warm(self, address: str | None, videos: Sequence[Video]) -> None:
        """Have the edge that would serve `address` fetch the first videos' first segments."""
        vod = [v for v in videos if v.state == "ready" and v.kind == "upload"][: self.first]
        if not vod or self._http is None:
            return
        if len(self._running) >= self.max_running:
            self.warmed.labels("skipped").inc(len(vod))
            return
        task = asyncio.create_task(self._warm(address, vod))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _warm(self, address: str | None, videos: list[Video]) -> None:
        edge = await self._edge_for(address, videos[0].id)
        if edge is None:
            self.warmed.labels("failed").inc(len(videos))
            return
        now = time.monotonic()
        if len(self._recent) > self.remember:
            self._recent = {k: t for k, t in self._recent.items() if now - t < self.remember_seconds}
            if len(self._recent) > self.remember:
                self._recent.clear()
        todo = []
        for video in videos:
            if now - self._recent.get((edge, video.id), -self.remember_seconds) < self.remember_seconds:
                self.warmed.labels("recent").inc()
            else:
                self._recent[(edge, video.id)] = now
                todo.append(video)
        results = await asyncio.gather(*(self._ask(edge, v.id) for v in todo))
        for ok in results:
            self.warmed.labels("asked" if ok else "failed").inc()

    async def _edge_for(self, address: str | None, video_id: str) -> str | None:
        """The edge geo sends `address` to (scheme://host:port), or None."""
        assert self._http is not None
        headers = {"X-Forwarded-For": address} if address else {}
        try:
            async with self._http.get(f"{self.geo_url}/vod/{video_id}/master.m3u8",
                                      headers=headers, allow_redirects=False) as resp:
                location = resp.headers.get("Location")
                if resp.status != 302 or not location:
                    return None
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            log.info("geo did not name an edge to warm", extra=fields(error=repr(exc)))
            return None
        parts = urlsplit(location)
        return f"{parts.scheme}://{parts.netloc}"

    async def _ask(self, edge: str, video_id: str) -> bool:
        """Master, start rendition playlist, then its init with CMCD nor = the first segment."""
        master = f"{edge}/vod/{video_id}/master.m3u8"
        try:
            variant = _first_uri(await self._text(master), "#EXT-X-STREAM-INF")
            if variant is None:
                return False
            playlist_url = urljoin(master, variant)
            playlist = await self._text(playlist_url)
            init, segment = _map_uri(playlist), _first_uri(playlist, "#EXTINF")
            if init is None or segment is None:
                return False
            assert self._http is not None
            async with self._http.get(urljoin(playlist_url, init),
                                      headers={"CMCD-Request": f'nor="{segment}"'}) as resp:
                await resp.read()
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError, UnicodeDecodeError) as exc:
            log.info("edge warm failed", extra=fields(edge=edge, video=video_id, error=repr(exc)))
            return False

    async def _text(self, url: str) -> str:
        assert self._http is not None
        async with self._http.get(url) as resp:
            if resp.status != 200:
                raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status)
            return (await resp.content.read(1024 * 1024)).decode()


def _first_uri(playlist: str, after: str) -> str | None:
    """The first URI line that follows a line starting with `after`."""
    seen = False
    for line in playlist.splitlines():
        line = line.strip()
        if line.startswith(after):
            seen = True
        elif seen and line and not line.startswith("#"):
            return line
    return None


def _map_uri(playlist: str) -> str | None:
    for line in playlist.splitlines():
        if line.startswith("#EXT-X-MAP:") and 'URI="' in line:
            return line.split('URI="', 1)[1].split('"', 1)[0]
    return None
