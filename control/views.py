"""View counts, write-behind: a view is accepted in memory and merged in batches.

A request adds (video, viewer, window) to this process's pending set and is answered at once; no
database write happens on the request path. Every `flush_seconds` the pending views go to the
database in one transaction: inserted into `views` (whose key, one row per viewer per window,
drops repeats, also those accepted by another control process) and each video's `views` column
raised by the rows that were new. So totals are exact across processes, and a crash loses at most
what was accepted since the last flush; a graceful stop flushes everything.

Memory is bounded: past `max_pending` views the next view starts a flush at once, and is refused
(`Full`: 503 with Retry-After) until that flush has room again. A few recently accepted keys are
remembered so a repeat in the same process answers `counted: false` at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter as Tally
from collections import OrderedDict
from collections.abc import Callable
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from control.db import Database, Tx
from reel.logs import fields

log = logging.getLogger("reel.control.views")

Key = tuple[str, str, int]  # video id, viewer, counting window
BATCH = 400  # rows per INSERT statement (4 parameters each: well under every dialect's limit)


class Full(Exception):
    """The pending views are at their bound: try again after the flush."""


class ViewMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter("reel_control_views_accepted_total",
                                "Views accepted into the write-behind buffer", registry=registry)
        self.repeats = Counter("reel_control_views_repeat_total",
                               "Views refused at once as a repeat of a recent one in this process",
                               registry=registry)
        self.refused = Counter("reel_control_views_refused_total",
                               "Views answered 503 because the buffer was full", registry=registry)
        self.merged = Counter("reel_control_views_merged_total",
                              "Views the database counted (new per viewer and window)",
                              registry=registry)
        self.pending = Gauge("reel_control_views_pending", "Views waiting for the next flush",
                             registry=registry)
        self.flush = Histogram("reel_control_views_flush_seconds", "How long a flush took",
                               registry=registry)


class ViewCounter:
    """The write-behind buffer of one control process: `start()`, `add()` per view, `close()`."""

    def __init__(self, db: Database, registry: CollectorRegistry, *, window_seconds: float,
                 flush_seconds: float = 0.5, max_pending: int = 100_000,
                 remember: int = 100_000, clock: Callable[[], float] = time.time,
                 on_counted: Callable[[str, int], None] = lambda video_id, views: None) -> None:
        self.db = db
        self.on_counted = on_counted  # each merged video's new total, e.g. for a cache
        self.window = window_seconds
        self.flush_seconds = flush_seconds
        self.max_pending = max_pending
        self.remember = remember
        self.clock = clock
        self.metrics = ViewMetrics(registry)
        self._pending: dict[Key, float] = {}  # key -> when it was seen
        self._per_video: Tally[str] = Tally()
        self._recent: OrderedDict[Key, None] = OrderedDict()  # LRU of keys accepted lately
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one flush at a time
        self._wake = asyncio.Event()

    def add(self, video_id: str, viewer: str) -> bool:
        """Accept a view; False when it repeats one this process accepted in the same window.
        Raises Full when the buffer is at its bound."""
        now = self.clock()
        key = (video_id, viewer, int(now // self.window))
        if key in self._recent or key in self._pending:
            self.metrics.repeats.inc()
            return False
        if len(self._pending) >= self.max_pending:
            self._wake.set()
            self.metrics.refused.inc()
            raise Full
        self._pending[key] = now
        self._per_video[video_id] += 1
        self._recent[key] = None
        if len(self._recent) > self.remember:
            self._recent.popitem(last=False)
        self.metrics.accepted.inc()
        self.metrics.pending.inc()
        return True

    def pending(self, video_id: str) -> int:
        """Views of `video_id` accepted here and not yet merged."""
        return self._per_video.get(video_id, 0)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def close(self) -> None:
        """Stop flushing on a timer, then merge whatever is pending."""
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def _run(self) -> None:
        while True:
            with suppress(TimeoutError):
                async with asyncio.timeout(self.flush_seconds):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
            except Exception:
                # The views stay pending (flush puts them back) and the next tick tries again.
                log.exception("view flush failed", extra=fields(pending=len(self._pending)))

    async def flush(self) -> int:
        """Merge the pending views in one transaction; returns how many the database counted."""
        async with self._lock:
            if not self._pending:
                return 0
            batch, self._pending = self._pending, {}
            per_video, self._per_video = self._per_video, Tally()
            self.metrics.pending.set(0)
            started = time.perf_counter()
            try:
                totals = await self.db.transaction(lambda tx: _merge(tx, batch))
            except BaseException:
                # Back in the buffer, ahead of anything newer: nothing accepted is dropped.
                batch.update(self._pending)
                self._pending = batch
                per_video.update(self._per_video)
                self._per_video = per_video
                self.metrics.pending.set(len(batch))
                raise
            self.metrics.flush.observe(time.perf_counter() - started)
            counted = sum(new for new, _ in totals.values())
            self.metrics.merged.inc(counted)
            for video_id, (_, views) in totals.items():
                self.on_counted(video_id, views)
            return counted


async def _merge(tx: Tx, batch: dict[Key, float]) -> dict[str, tuple[int, int]]:
    """Insert the batch's views (repeats and views of videos gone since are dropped), then add each
    video's new ones to its count. Returns {video: (views new, its count now)}."""
    new: Tally[str] = Tally()
    items = list(batch.items())
    for start in range(0, len(items), BATCH):
        chunk = items[start:start + BATCH]
        values = ", ".join(["(?, ?, CAST(? AS BIGINT), CAST(? AS DOUBLE PRECISION))"] * len(chunk))
        params = [p for (video_id, viewer, bucket), at in chunk for p in (video_id, viewer, bucket, at)]
        # WHERE, not JOIN ... ON: SQLite needs it to tell the SELECT from the upsert's ON CONFLICT.
        rows = await tx.fetchall(
            f"WITH v (video_id, viewer, bucket, created_at) AS (VALUES {values})"
            f" INSERT INTO views (video_id, viewer, bucket, created_at)"
            f" SELECT video_id, viewer, bucket, created_at FROM v"
            f" WHERE video_id IN (SELECT id FROM videos)"
            f" ON CONFLICT DO NOTHING RETURNING video_id", params)
        new.update(row[0] for row in rows)
    totals = {}
    for video_id, count in sorted(new.items()):  # one order everywhere: no deadlocks between flushes
        row = await tx.fetchone("UPDATE videos SET views = views + ? WHERE id = ? RETURNING views",
                                (count, video_id))
        if row is not None:
            totals[video_id] = (count, row[0])
    return totals
