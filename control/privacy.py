"""Private means private on the delivery path: access markers for origins, playback tokens for
viewers, edge purges when a video's privacy changes.

Origins know which videos need a token without asking the database: control keeps a marker
object, `access/{id}/level` (`private` or `unlisted`), for every video that is not public, and
removes it when the video becomes public. Origins read it through a cache of about a second and
mark what they serve (`X-Reel-Access`), so edges keep the mark with their cached copy; edges are
purged at once, and once more after the origins' cache has expired, so no copy fetched in between
outlives the change.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from control.purge import EdgePurger
from control.videos import Video, output_prefix
from origin.layout import access_key
from origin.store import Store
from reel.logs import fields
from reel.playback_token import KeyRing

log = logging.getLogger("reel.control.privacy")

ORIGIN_MARKER_TTL = 1.0  # how long an origin believes an access marker (origin.app.Access)


class Privacy:
    """Signs playback tokens and makes a video's privacy hold at every origin and edge."""

    def __init__(self, store: Store, purger: EdgePurger, ring: KeyRing | None,
                 token_seconds: float) -> None:
        self.store, self.purger, self.ring = store, purger, ring
        self.token_seconds = token_seconds
        self._tasks: set[asyncio.Task[None]] = set()

    def token(self, video: Video) -> str | None:
        """A playback token for whoever was shown `video` (callers show private videos only to
        their owner and admins), or None for a public video."""
        if video.privacy == "public" or self.ring is None:
            return None
        return self.ring.sign(video.id, self.token_seconds)

    async def apply(self, video_id: str, privacy: str, *, purge: bool = True) -> None:
        """Write (or remove) the video's access marker, then purge the edges."""
        key = access_key(video_id)
        if privacy == "public":
            await self.store.delete_prefix(key.rpartition("/")[0] + "/")
        else:
            await self.store.write_bytes(key, privacy.encode())
        if purge:
            await self.purge(video_id)
            self._spawn(self._purge_later(video_id), f"purge {video_id} again")

    async def forget(self, video_id: str) -> None:
        """A deleted video: no marker left behind (its objects are gone, so it answers as unknown)."""
        await self.store.delete_prefix(access_key(video_id).rpartition("/")[0] + "/")

    async def purge(self, video_id: str) -> int:
        edges = await self.purger.purge([f"/{output_prefix(video_id)}"])
        log.info("edges purged", extra=fields(video=video_id, edges=edges))
        return edges

    async def _purge_later(self, video_id: str) -> None:
        # An edge that fetched between the first purge and the origins' reading of the new
        # marker cached the old answer: once the origins' cache has expired, purge again.
        await asyncio.sleep(ORIGIN_MARKER_TTL + 0.5)
        await self.purge(video_id)

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
