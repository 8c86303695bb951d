"""Fetching from upstream: the shield, then the origins nearest first, failing over on errors.

Each upstream is up or down. Passive: `fall` failures in a row (connect error, timeout, 5xx) mark
it down, any good answer marks it up. Active: every `interval` seconds each is asked for
/healthz, and `rise` good answers in a row bring a down one back. Down upstreams are tried last,
not never: when everything looks down, asking is better than failing without trying.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
from yarl import URL

from edge.http import RELAY_HEADER
from geo.regions import RegionsError, load_regions
from reel.logs import fields
from reel.playback_token import redact

log = logging.getLogger("reel.edge.upstream")


class UpstreamError(Exception):
    """No upstream gave a usable response."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class _State:
    __slots__ = ("up", "failures", "successes")

    def __init__(self) -> None:
        self.up = True
        self.failures = 0  # in a row
        self.successes = 0  # in a row, while down


class Upstream:
    """GETs a path from `urls` in order (healthy ones first), moving on after a connect error,
    a timeout or a 5xx.

    The session lives from start() to close() (the app's startup and cleanup). Once a response
    head is back there is no failover: its body may already be on its way to clients.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        on_response: Callable[[str, int], None],
        on_error: Callable[[str], None],
        connect_timeout: float = 1.0,
        first_byte_timeout: float = 5.0,
        read_timeout: float = 10.0,
        live_hold_timeout: float = 20.0,
        live_connect_timeout: float = 4.0,
        max_connections: int = 256,
        health_interval: float = 2.0,
        fall: int = 2,
        rise: int = 2,
    ) -> None:
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = list(dict.fromkeys(url.rstrip("/") for url in urls))
        self._on_response = on_response
        self._on_error = on_error
        self._first_byte_timeout = first_byte_timeout
        self._live_hold_timeout = live_hold_timeout
        self.read_timeout = read_timeout  # for each read of a body: `read()`
        # connect bounds the wait for a pooled connection plus the TCP connect itself. No
        # sock_read: aiohttp 3.14 can leave that timer armed on a connection back in the pool
        # (after a body that paused the transport), failing the next request on it at once
        # (aio-libs/aiohttp#12953, #13000), so the head and body reads are timed here instead.
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout + read_timeout, sock_connect=connect_timeout
        )
        # A held live request (a blocking reload, a part) waits longer for its TCP connect: an
        # origin busy with a live stream may drop a SYN from its full accept queue, and the kernel
        # resends it only after 1 s, then 3 s; a 1 s limit turns that one lost SYN into a 504 and
        # a stalled viewer just when the stream is busiest, while the request may wait for its
        # part far longer anyway (live_hold_timeout).
        self._live_timeout = aiohttp.ClientTimeout(
            total=None, connect=max(connect_timeout, live_connect_timeout) + read_timeout,
            sock_connect=max(connect_timeout, live_connect_timeout))
        self._probe_timeout = aiohttp.ClientTimeout(total=max(connect_timeout, min(health_interval, 5.0)))
        self._max_connections = max_connections
        self._interval, self._fall, self._rise = health_interval, fall, rise
        self._state = {url: _State() for url in self.urls}
        self._session: aiohttp.ClientSession | None = None
        self._prober: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            # Bytes go to clients as the upstream sent them, so don't ask for compression.
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )
        if self._interval > 0:
            self._prober = asyncio.create_task(self._probe_forever(), name="upstream health")

    async def close(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            await asyncio.gather(self._prober, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Upstream used before start()")
        return self._session

    def healthy(self, url: str) -> bool:
        return self._state[url].up

    def order(self) -> list[str]:
        """The upstreams to try, in order: the healthy ones as configured, then the rest."""
        return [u for u in self.urls if self._state[u].up] + [u for u in self.urls if not self._state[u].up]

    async def open(
        self, path: str, headers: Mapping[str, str] | None = None, via: str | None = None
    ) -> tuple[aiohttp.ClientResponse, str]:
        """(response, upstream URL) for `path` ("/vod/…"), asking `via` first when given (the
        worker that owns the key, told so by RELAY_HEADER); the caller must release the response."""
        timed_out = False
        problems: list[str] = []
        order = self.order() if via is None else [via, *self.order()]
        held = _held(path)
        first_byte = self._live_hold_timeout if held else self._first_byte_timeout
        timeout = self._live_timeout if held else self._timeout
        for number, base in enumerate(order, 1):
            try:
                async with asyncio.timeout(first_byte):
                    resp = await self.session.get(
                        URL(base + path, encoded=True),
                        headers={**(headers or {}), RELAY_HEADER: "1"} if base == via else headers,
                        allow_redirects=False,
                        timeout=timeout,
                    )
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
                # ValueError: what aiohttp raises for some malformed responses.
                timed_out = isinstance(exc, TimeoutError)
                self.failed(base)
                problems.append(f"{base}: {type(exc).__name__}")
                log.warning("upstream failed",  # the path without its (edge-signed) token
                            extra=fields(upstream=base, path=redact(path), error=repr(exc)))
                continue
            self._on_response(base, resp.status)
            if resp.status >= 500 and not _live_verdict(path, resp.status):
                self.failed(base)
                if number < len(order):
                    problems.append(f"{base}: {resp.status}")
                    resp.release()
                    continue
            elif base in self._state:
                self._succeeded(base)
            return resp, base
        raise UpstreamError("; ".join(problems), timed_out=timed_out)

    async def read(self, resp: aiohttp.ClientResponse) -> bytes:
        """The next piece of `resp`'s body (b"" at its end); TimeoutError after `read_timeout`."""
        async with asyncio.timeout(self.read_timeout):
            return await resp.content.readany()

    def failed(self, url: str) -> None:
        """Passive detection: count a failure of `url` (also for bodies that break mid-way)."""
        self._on_error(url)
        if url in self._state:
            self._count_failure(url)

    def _count_failure(self, url: str, **why: str) -> None:
        state = self._state[url]
        state.failures += 1
        state.successes = 0
        if state.up and state.failures >= self._fall:
            state.up = False
            log.warning("upstream down", extra=fields(upstream=url, **why))

    def _succeeded(self, url: str) -> None:
        state = self._state[url]
        state.failures = 0
        if not state.up:
            state.up = True
            log.info("upstream up", extra=fields(upstream=url))

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.gather(*(self._probe(url) for url in self.urls))
            await asyncio.sleep(self._interval)

    async def _probe(self, url: str) -> None:
        try:
            async with self.session.get(url + "/healthz", timeout=self._probe_timeout) as resp:
                ok = resp.status == 200
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
            ok = False
        state = self._state[url]
        if ok:
            state.successes += 1
            if not state.up and state.successes >= self._rise:
                self._succeeded(url)
        else:
            self._count_failure(url, by="health check")


class ConfigError(ValueError):
    """The edge cannot start with this configuration; the message says why."""


def origins_nearest(regions_file: Path | str, region: str) -> list[str]:
    """The origins of a regions file as `region` sees them: its own, then the others by
    distance. The order is geo's (`RegionMap.origins_nearest`), so geo and edge agree."""
    try:
        regions = load_regions(regions_file)
    except RegionsError as exc:
        raise ConfigError(str(exc)) from None
    if region not in regions:
        raise ConfigError(f"{regions_file}: no region {region!r} (regions: {', '.join(regions)})")
    origins = regions.origins_nearest(region)
    if not origins:
        raise ConfigError(f"{regions_file}: no region lists any origins")
    return origins


def _held(path: str) -> bool:
    """A blocking reload or a live part: the origin holds it until the stream makes that part
    (up to three target durations, LL-HLS), which is no sign of a slow or failing upstream."""
    return path.startswith("/live/") and ("_HLS_msn=" in path or path.endswith(".m4s"))


def _live_verdict(path: str, status: int) -> bool:
    """A live part or blocking reload the stream has not made in time is answered 503 (LL-HLS:
    after three target durations): the stream's state, the same from every origin, not a
    failing upstream to count down or fail over from."""
    return status == 503 and path.startswith("/live/")

