"""Packaged master playlists for steering, fetched from a healthy edge and kept briefly.

Each master is fetched once per `ttl` whatever the number of players asking (concurrent askers
share one fetch), from the edges the asking client would use, best first; a missing video is
remembered for `missing_ttl` so unknown IDs cannot make geo hammer the edges. The cache holds at
most `max_entries` masters (each at most steering.MAX_MASTER_BYTES), least recently used out first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Sequence

import aiohttp
from yarl import URL

from geo.steering import MAX_MASTER_BYTES, Master, NotAMaster, parse_master
from reel.http import read_at_most
from reel.logs import fields
from reel.playback_token import ACCESS_HEADER

log = logging.getLogger("geo.masters")


class UnknownVideo(LookupError):
    """The edges answered 404: there is no such (complete) video. `guarded`: the edges said that
    only a valid playback token may learn so (a tokenless client gets the same 403 as for a
    private video)."""

    def __init__(self, path: str, guarded: bool = False) -> None:
        super().__init__(path)
        self.guarded = guarded


class Forbidden(LookupError):
    """The edges refused: the video needs a playback token geo did not have."""


class MasterUnavailable(Exception):
    """No edge gave a usable master playlist; the message says what went wrong."""


class MasterCache:
    def __init__(
        self,
        *,
        ttl: float = 10.0,
        missing_ttl: float = 2.0,
        timeout: float = 2.0,
        attempts: int = 2,
        max_entries: int = 1024,
    ) -> None:
        self.ttl, self.missing_ttl, self.timeout = ttl, missing_ttl, timeout
        self.attempts, self.max_entries = attempts, max_entries
        # path -> (expires, master or None when missing, guarded: only for a valid token)
        self._entries: OrderedDict[str, tuple[float, Master | None, bool]] = OrderedDict()
        self._fetches: dict[str, asyncio.Task[tuple[Master | None, bool]]] = {}
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout),
            headers={"User-Agent": "reel-geo-steering"},
        )

    async def close(self) -> None:
        for task in self._fetches.values():
            task.cancel()
        await asyncio.gather(*self._fetches.values(), return_exceptions=True)
        self._fetches.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(
        self, path: str, edges: Sequence[str], fetch_path: str | None = None
    ) -> tuple[Master, bool]:
        """The master at `path` ("/vod/ID/master.m3u8"), asking `edges` in order (for
        `fetch_path`, the path with a playback token) when it is not cached, and whether it is
        guarded (a private or unlisted video's: only for a valid token). The cache is keyed by
        `path`, never by a token. Raises UnknownVideo, Forbidden or MasterUnavailable."""
        cached = self._entries.get(path)
        if cached is not None and cached[0] > time.monotonic():
            self._entries.move_to_end(path)
            return self._found(cached[1], cached[2], path)
        task = self._fetches.get(path)
        if task is None:
            task = asyncio.create_task(self._fetch(path, fetch_path or path, list(edges)),
                                       name=f"master {path}")
            self._fetches[path] = task
            task.add_done_callback(lambda _: self._fetches.pop(path, None))
        # shield: one asker giving up (its client left) must not cancel the others' fetch.
        return self._found(*await asyncio.shield(task), path)

    @staticmethod
    def _found(master: Master | None, guarded: bool, path: str) -> tuple[Master, bool]:
        if master is None:
            raise UnknownVideo(path, guarded)
        return master, guarded

    async def _fetch(self, path: str, fetch_path: str, edges: list[str]) -> tuple[Master | None, bool]:
        problems = []
        for edge in edges[: self.attempts]:
            try:
                master, guarded = await self._fetch_from(edge, fetch_path)
            except (MasterUnavailable, aiohttp.ClientError, TimeoutError, OSError) as exc:
                problems.append(f"{edge}: {exc or type(exc).__name__}")
                continue
            self._remember(path, master, guarded)
            return master, guarded
        log.warning("no master playlist", extra=fields(path=path, problems=problems))
        raise MasterUnavailable("; ".join(problems) or "no edge to ask")

    async def _fetch_from(self, edge: str, path: str) -> tuple[Master | None, bool]:
        assert self._session is not None, "start() first"
        async with self._session.get(URL(edge + path, encoded=True), allow_redirects=False) as resp:
            guarded = ACCESS_HEADER in resp.headers
            if resp.status == 404:
                return None, guarded
            if resp.status == 403:
                raise Forbidden(path)
            if resp.status != 200:
                raise MasterUnavailable(f"HTTP {resp.status}")
            if resp.content_length is not None and resp.content_length > MAX_MASTER_BYTES:
                raise MasterUnavailable("master playlist too large")
            body = await read_at_most(resp, MAX_MASTER_BYTES)
        if body is None:
            raise MasterUnavailable("master playlist too large")
        try:
            return parse_master(body), guarded
        except NotAMaster as exc:
            raise MasterUnavailable(str(exc)) from None

    def _remember(self, path: str, master: Master | None, guarded: bool) -> None:
        ttl = self.ttl if master is not None else self.missing_ttl
        self._entries[path] = (time.monotonic() + ttl, master, guarded)
        self._entries.move_to_end(path)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
