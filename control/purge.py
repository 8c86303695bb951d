"""Telling the edges to forget a deleted video: `POST {edge}/purge` with the purge token.

An edge that is down or slow must not fail a delete: each call has a timeout, failures are logged
and counted, and the objects are already gone from the store (so a miss can no longer refill).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import aiohttp
from prometheus_client import CollectorRegistry, Counter

from reel.logs import fields

log = logging.getLogger("reel.control.purge")


class EdgePurger:
    """Purges prefixes on every edge in `edges`; `start()`/`close()` own the HTTP session."""

    def __init__(self, edges: Sequence[str], token: str, registry: CollectorRegistry,
                 timeout: float = 3.0) -> None:
        self.edges = [e.rstrip("/") for e in edges]
        self.token = token
        self.timeout = timeout
        self.calls = Counter("reel_control_edge_purges_total", "Edge purge calls by result",
                             ["result"], registry=registry)
        self._http: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def purge(self, prefixes: Sequence[str], paths: Sequence[str] = ()) -> int:
        """Purge on every edge at once; returns how many edges confirmed."""
        if not self.edges:
            return 0
        results = await asyncio.gather(*(self._one(edge, prefixes, paths) for edge in self.edges))
        return sum(results)

    async def _one(self, edge: str, prefixes: Sequence[str], paths: Sequence[str]) -> bool:
        assert self._http is not None, "EdgePurger.start() was not awaited"
        try:
            async with self._http.post(
                f"{edge}/purge", json={"paths": list(paths), "prefixes": list(prefixes)},
                headers={"Authorization": f"Bearer {self.token}"},
            ) as resp:
                if resp.status != 200:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=(await resp.text())[:200])
                body = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            self.calls.labels("error").inc()
            log.warning("edge purge failed", extra=fields(edge=edge, prefixes=list(prefixes),
                                                          error=repr(exc)))
            return False
        self.calls.labels("ok").inc()
        log.info("edge purged", extra=fields(edge=edge, prefixes=list(prefixes),
                                             purged=body.get("purged") if isinstance(body, dict)
                                             else None))
        return True
