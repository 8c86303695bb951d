"""The job queue: enqueue, claim with a lease, heartbeat, complete, fail with retries.

A worker claims the oldest claimable job and holds it under a lease that heartbeats renew. A job is
claimable when it is queued and its `not_before` has passed, or when it is claimed but its lease
ran out (the worker died): then another worker takes it and the attempt count goes up. Each claim
is handed out as a *lease handle*, `"{job_id}.{attempt}"`: once the job is claimed again or ends,
the old handle is refused (`LeaseLost`), so a stale worker learns to stop.

The queue knows nothing of what a job is about: `JobHooks` (see `control.videos`) are told of every
transition, inside the same transaction, and keep their own tables in step.
"""

from __future__ import annotations

import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from control.db import Database, Row, Tx
from reel.logs import fields

log = logging.getLogger("reel.control.jobs")

STATES = ("queued", "claimed", "done", "failed")
_HANDLE = re.compile(r"([A-Za-z0-9_-]{1,64})(?:\.([0-9]{1,9}))?")


class JobError(Exception):
    """Base class for refused job operations."""


class UnknownJob(JobError):
    """No such job."""


class LeaseLost(JobError):
    """The lease handle no longer holds the job: it was claimed again, or it ended."""


@dataclass(frozen=True)
class Job:
    id: str
    video_id: str
    kind: str
    state: str
    attempts: int
    max_attempts: int
    not_before: float
    lease_expires_at: float | None
    worker: str | None
    last_error: str | None

    @property
    def handle(self) -> str:
        """The lease handle of the current claim (what a worker puts in its URLs)."""
        return f"{self.id}.{self.attempts}"

    @classmethod
    def from_row(cls, row: Row) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


_COLUMNS = ", ".join(Job.__dataclass_fields__)


class JobHooks(Protocol):
    """Told of every transition, inside the transaction making it."""

    async def claimed(self, tx: Tx, job: Job) -> None: ...

    async def progressed(self, tx: Tx, job: Job, progress: tuple[int, int] | None,
                         preview: str | None) -> None: ...

    async def completed(self, tx: Tx, job: Job, result: Mapping[str, Any]) -> None: ...

    async def retrying(self, tx: Tx, job: Job, reason: str) -> None: ...

    async def failed(self, tx: Tx, job: Job, reason: str) -> None: ...


def parse_handle(handle: str) -> tuple[str, int | None]:
    """`"id.3"` -> ("id", 3); a bare `"id"` -> ("id", None), meaning whoever holds it now."""
    match = _HANDLE.fullmatch(handle)
    if match is None:
        raise UnknownJob(handle)
    attempt = match.group(2)
    return match.group(1), None if attempt is None else int(attempt)


class JobQueue:
    """The queue over the `jobs` table of `db`."""

    def __init__(
        self,
        db: Database,
        hooks: JobHooks,
        *,
        lease_seconds: float = 60.0,
        max_attempts: int = 3,
        retry_backoff_seconds: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if lease_seconds <= 0 or max_attempts < 1 or retry_backoff_seconds < 0:
            raise ValueError("lease_seconds > 0, max_attempts >= 1, retry_backoff_seconds >= 0")
        self.db = db
        self.hooks = hooks
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retry_backoff_seconds = retry_backoff_seconds
        self.clock = clock

    def backoff(self, attempts: int) -> float:
        """Seconds to wait before retrying after the `attempts`-th attempt failed."""
        return self.retry_backoff_seconds * 2 ** max(0, attempts - 1)

    # -- enqueue -------------------------------------------------------------------------------

    async def enqueue_in(self, tx: Tx, video_id: str, kind: str = "package") -> Job:
        """Add a job inside the caller's transaction (so it commits with what it is about)."""
        now = self.clock()
        job_id = secrets.token_urlsafe(9)
        await tx.execute(
            "INSERT INTO jobs (id, video_id, kind, state, max_attempts, not_before,"
            " created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
            (job_id, video_id, kind, self.max_attempts, now, now, now),
        )
        return await self._get(tx, job_id)

    async def enqueue(self, video_id: str, kind: str = "package") -> Job:
        return await self.db.transaction(lambda tx: self.enqueue_in(tx, video_id, kind))

    # -- worker side ---------------------------------------------------------------------------

    async def claim(self, worker: str) -> Job | None:
        """Claim the oldest claimable job for `worker`, or None. Atomic: one claimant per job."""
        return await self.db.transaction(lambda tx: self._claim(tx, worker))

    async def _claim(self, tx: Tx, worker: str) -> Job | None:
        now = self.clock()
        await self._expire_exhausted(tx, now)
        # PostgreSQL: concurrent claimants skip the row another one holds instead of waiting.
        skip_locked = " FOR UPDATE SKIP LOCKED" if self.db.dialect == "postgresql" else ""
        row = await tx.fetchone(
            f"UPDATE jobs SET state = 'claimed', attempts = attempts + 1, worker = :worker,"
            f" lease_expires_at = :lease, updated_at = :now"
            f" WHERE id = (SELECT id FROM jobs"
            f"   WHERE (state = 'queued' AND not_before <= :now)"
            f"      OR (state = 'claimed' AND lease_expires_at < :now)"
            f"   ORDER BY not_before, created_at LIMIT 1{skip_locked})"
            f" RETURNING {_COLUMNS}",
            {"worker": worker, "lease": now + self.lease_seconds, "now": now},
        )
        if row is None:
            return None
        job = Job.from_row(row)
        await self.hooks.claimed(tx, job)
        log.info("job claimed", extra=fields(job=job.id, video=job.video_id, worker=worker,
                                             attempt=job.attempts))
        return job

    async def _expire_exhausted(self, tx: Tx, now: float) -> None:
        """Jobs whose last allowed attempt's lease ran out fail instead of being claimed again."""
        rows = await tx.fetchall(
            f"UPDATE jobs SET state = 'failed', lease_expires_at = NULL, updated_at = :now,"
            f" last_error = 'lease_expired: worker ' || coalesce(worker, '?')"
            f"   || ' stopped reporting during attempt ' || attempts || ' of ' || max_attempts"
            f" WHERE state = 'claimed' AND lease_expires_at < :now AND attempts >= max_attempts"
            f" RETURNING {_COLUMNS}",
            {"now": now},
        )
        for row in rows:
            job = Job.from_row(row)
            await self.hooks.failed(tx, job, job.last_error or "lease_expired")
            log.warning("job failed", extra=fields(job=job.id, video=job.video_id,
                                                   reason=job.last_error))

    async def heartbeat(self, handle: str, progress: tuple[int, int] | None = None,
                        preview: str | None = None) -> Job:
        """Renew the lease of `handle`; record progress (done, total) and the playlist playable
        so far (`preview`, relative to the video's output prefix) when given."""

        async def beat(tx: Tx) -> Job:
            job = await self._held(tx, handle)
            now = self.clock()
            await tx.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ?",
                (now + self.lease_seconds, now, job.id),
            )
            job = await self._get(tx, job.id)
            if progress is not None or preview is not None:
                await self.hooks.progressed(tx, job, progress, preview)
            return job

        return await self.db.transaction(beat)

    async def complete(self, handle: str, result: Mapping[str, Any]) -> Job:
        async def finish(tx: Tx) -> Job:
            job = await self._held(tx, handle)
            job = await self._set_state(tx, job.id, "done", last_error=None)
            await self.hooks.completed(tx, job, result)
            log.info("job done", extra=fields(job=job.id, video=job.video_id))
            return job

        return await self.db.transaction(finish)

    async def fail(self, handle: str, reason: str, *, permanent: bool = False) -> Job:
        """Record a failed attempt: retried after a backoff unless permanent or out of attempts.

        Returns the job as it now is: `state` is "queued" (will be retried) or "failed".
        """

        async def give_up_or_retry(tx: Tx) -> Job:
            job = await self._held(tx, handle)
            if permanent or job.attempts >= job.max_attempts:
                job = await self._set_state(tx, job.id, "failed", last_error=reason)
                await self.hooks.failed(tx, job, reason)
                log.warning("job failed", extra=fields(job=job.id, video=job.video_id,
                                                       reason=reason, permanent=permanent))
            else:
                delay = self.backoff(job.attempts)
                job = await self._set_state(tx, job.id, "queued", last_error=reason,
                                            not_before=self.clock() + delay)
                await self.hooks.retrying(tx, job, reason)
                log.info("job retrying", extra=fields(job=job.id, video=job.video_id,
                                                      reason=reason, delay=delay))
            return job

        return await self.db.transaction(give_up_or_retry)

    # -- reading -------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return None if row is None else Job.from_row(row)

    async def counts(self) -> dict[str, int]:
        """How many jobs are in each state (every state present, zero included)."""
        rows = await self.db.fetchall("SELECT state, count(*) FROM jobs GROUP BY state")
        counts = dict.fromkeys(STATES, 0)
        counts.update({row[0]: row[1] for row in rows})
        return counts

    # -- helpers (inside a transaction) --------------------------------------------------------

    async def _get(self, tx: Tx, job_id: str) -> Job:
        row = await tx.fetchone(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        if row is None:
            raise UnknownJob(job_id)
        return Job.from_row(row)

    async def _held(self, tx: Tx, handle: str) -> Job:
        """The job `handle` still holds, or LeaseLost / UnknownJob."""
        job_id, attempt = parse_handle(handle)
        job = await self._get(tx, job_id)
        if job.state != "claimed":
            raise LeaseLost(f"job {job_id} is {job.state}, no longer claimed")
        if attempt is not None and attempt != job.attempts:
            raise LeaseLost(
                f"lease {handle} expired and job {job_id} was claimed again "
                f"(attempt {job.attempts}, worker {job.worker})"
            )
        return job

    async def _set_state(self, tx: Tx, job_id: str, state: str, *,
                         last_error: str | None, not_before: float | None = None) -> Job:
        now = self.clock()
        row = await tx.fetchone(
            f"UPDATE jobs SET state = ?, last_error = ?, lease_expires_at = NULL,"
            f" not_before = coalesce(?, not_before), updated_at = ? WHERE id = ?"
            f" RETURNING {_COLUMNS}",
            (state, last_error, not_before, now, job_id),
        )
        return Job.from_row(row)
