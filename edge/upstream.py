"""Fetching from upstream: the origins in order (or a shield), failing over on errors."""

from __future__ import annotations

import logging

import aiohttp
from prometheus_client import Counter
from yarl import URL

from reel.logs import fields

log = logging.getLogger("reel.edge.upstream")


class UpstreamError(Exception):
    """No upstream gave a usable response."""

    def __init__(self, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.timed_out = timed_out


class Upstream:
    """GETs a path from `urls` in order, moving on after a connect error, a timeout or a 5xx.

    The session lives from start() to close() (the app's startup and cleanup). Once a response
    head is back there is no failover: its body may already be on its way to clients.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        fetches: Counter,
        errors: Counter,
        connect_timeout: float = 2.0,
        read_timeout: float = 10.0,
        max_connections: int = 256,
    ) -> None:
        if not urls:
            raise ValueError("at least one upstream URL is needed")
        self.urls = [url.rstrip("/") for url in urls]
        self._fetches = fetches
        self._errors = errors
        # sock_read bounds the wait for the head and for every later read of the body; connect
        # bounds the wait for a pooled connection plus the TCP connect itself.
        self._timeout = aiohttp.ClientTimeout(
            total=None,
            connect=connect_timeout + read_timeout,
            sock_connect=connect_timeout,
            sock_read=read_timeout,
        )
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=self._timeout,
            connector=aiohttp.TCPConnector(limit=self._max_connections),
            # Bytes go to clients as the upstream sent them, so don't ask for compression.
            auto_decompress=False,
            skip_auto_headers=("Accept-Encoding",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def open(self, path: str) -> tuple[aiohttp.ClientResponse, str]:
        """(response, upstream URL) for `path` ("/vod/…"); the caller must release the response."""
        if self._session is None:
            raise RuntimeError("Upstream used before start()")
        timed_out = False
        problems: list[str] = []
        for number, base in enumerate(self.urls, 1):
            try:
                resp = await self._session.get(URL(base + path, encoded=True), allow_redirects=False)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                timed_out = isinstance(exc, TimeoutError)
                self._errors.labels(base).inc()
                problems.append(f"{base}: {type(exc).__name__}")
                log.warning("upstream failed", extra=fields(upstream=base, path=path, error=repr(exc)))
                continue
            self._fetches.labels(base, str(resp.status)).inc()
            if resp.status >= 500 and number < len(self.urls):
                self._errors.labels(base).inc()
                problems.append(f"{base}: {resp.status}")
                resp.release()
                continue
            return resp, base
        raise UpstreamError("; ".join(problems), timed_out=timed_out)
