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
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from control.db import Database
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
    def from_row(cls, row: sqlite3.Row) -> Job:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})


_COLUMNS = ", ".join(Job.__dataclass_fields__)


class JobHooks(Protocol):
    """Told of every transition, on the database thread inside the transaction making it."""

    def claimed(self, conn: sqlite3.Connection, job: Job) -> None: ...

    def progressed(self, conn: sqlite3.Connection, job: Job, done: int, total: int) -> None: ...

    def completed(self, conn: sqlite3.Connection, job: Job, result: Mapping[str, Any]) -> None: ...

    def retrying(self, conn: sqlite3.Connection, job: Job, reason: str) -> None: ...

    def failed(self, conn: sqlite3.Connection, job: Job, reason: str) -> None: ...


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

    def enqueue_in(self, conn: sqlite3.Connection, video_id: str, kind: str = "package") -> Job:
        """Add a job inside the caller's transaction (so it commits with what it is about)."""
        now = self.clock()
        job_id = secrets.token_urlsafe(9)
        conn.execute(
            "INSERT INTO jobs (id, video_id, kind, state, max_attempts, not_before,"
            " created_at, updated_at) VALUES (?, ?, ?, 'queued', ?, ?, ?, ?)",
            (job_id, video_id, kind, self.max_attempts, now, now, now),
        )
        return self._get(conn, job_id)

    async def enqueue(self, video_id: str, kind: str = "package") -> Job:
        return await self.db.transaction(lambda conn: self.enqueue_in(conn, video_id, kind))

    # -- worker side ---------------------------------------------------------------------------

    async def claim(self, worker: str) -> Job | None:
        """Claim the oldest claimable job for `worker`, or None. Atomic: one claimant per job."""
        return await self.db.transaction(lambda conn: self._claim(conn, worker))

    def _claim(self, conn: sqlite3.Connection, worker: str) -> Job | None:
        now = self.clock()
        self._expire_exhausted(conn, now)
        row = conn.execute(
            f"UPDATE jobs SET state = 'claimed', attempts = attempts + 1, worker = :worker,"
            f" lease_expires_at = :lease, updated_at = :now"
            f" WHERE id = (SELECT id FROM jobs"
            f"   WHERE (state = 'queued' AND not_before <= :now)"
            f"      OR (state = 'claimed' AND lease_expires_at < :now)"
            f"   ORDER BY not_before, created_at LIMIT 1)"
            f" RETURNING {_COLUMNS}",
            {"worker": worker, "lease": now + self.lease_seconds, "now": now},
        ).fetchone()
        if row is None:
            return None
        job = Job.from_row(row)
        self.hooks.claimed(conn, job)
        log.info("job claimed", extra=fields(job=job.id, video=job.video_id, worker=worker,
                                             attempt=job.attempts))
        return job

    def _expire_exhausted(self, conn: sqlite3.Connection, now: float) -> None:
        """Jobs whose last allowed attempt's lease ran out fail instead of being claimed again."""
        rows = conn.execute(
            f"UPDATE jobs SET state = 'failed', lease_expires_at = NULL, updated_at = :now,"
            f" last_error = 'lease_expired: worker ' || coalesce(worker, '?')"
            f"   || ' stopped reporting during attempt ' || attempts || ' of ' || max_attempts"
            f" WHERE state = 'claimed' AND lease_expires_at < :now AND attempts >= max_attempts"
            f" RETURNING {_COLUMNS}",
            {"now": now},
        ).fetchall()
        for row in rows:
            job = Job.from_row(row)
            self.hooks.failed(conn, job, job.last_error or "lease_expired")
            log.warning("job failed", extra=fields(job=job.id, video=job.video_id,
                                                   reason=job.last_error))

    async def heartbeat(self, handle: str, progress: tuple[int, int] | None = None) -> Job:
        """Renew the lease of `handle`; record progress (done, total) when given."""

        def beat(conn: sqlite3.Connection) -> Job:
            job = self._held(conn, handle)
            now = self.clock()
            conn.execute(
                "UPDATE jobs SET lease_expires_at = ?, updated_at = ? WHERE id = ?",
                (now + self.lease_seconds, now, job.id),
            )
            job = self._get(conn, job.id)
            if progress is not None:
                self.hooks.progressed(conn, job, *progress)
            return job

        return await self.db.transaction(beat)

    async def complete(self, handle: str, result: Mapping[str, Any]) -> Job:
        def finish(conn: sqlite3.Connection) -> Job:
            job = self._held(conn, handle)
            job = self._set_state(conn, job.id, "done", last_error=None)
            self.hooks.completed(conn, job, result)
            log.info("job done", extra=fields(job=job.id, video=job.video_id))
            return job

        return await self.db.transaction(finish)

    async def fail(self, handle: str, reason: str, *, permanent: bool = False) -> Job:
        """Record a failed attempt: retried after a backoff unless permanent or out of attempts.

        Returns the job as it now is: `state` is "queued" (will be retried) or "failed".
        """

        def give_up_or_retry(conn: sqlite3.Connection) -> Job:
            job = self._held(conn, handle)
            if permanent or job.attempts >= job.max_attempts:
                job = self._set_state(conn, job.id, "failed", last_error=reason)
                self.hooks.failed(conn, job, reason)
                log.warning("job failed", extra=fields(job=job.id, video=job.video_id,
                                                       reason=reason, permanent=permanent))
            else:
                delay = self.backoff(job.attempts)
                job = self._set_state(conn, job.id, "queued", last_error=reason,
                                      not_before=self.clock() + delay)
                self.hooks.retrying(conn, job, reason)
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

    # -- helpers (database thread) -------------------------------------------------------------

    def _get(self, conn: sqlite3.Connection, job_id: str) -> Job:
        row = conn.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise UnknownJob(job_id)
        return Job.from_row(row)

    def _held(self, conn: sqlite3.Connection, handle: str) -> Job:
        """The job `handle` still holds, or LeaseLost / UnknownJob."""
        job_id, attempt = parse_handle(handle)
        job = self._get(conn, job_id)
        if job.state != "claimed":
            raise LeaseLost(f"job {job_id} is {job.state}, no longer claimed")
        if attempt is not None and attempt != job.attempts:
            raise LeaseLost(
                f"lease {handle} expired and job {job_id} was claimed again "
                f"(attempt {job.attempts}, worker {job.worker})"
            )
        return job

    def _set_state(self, conn: sqlite3.Connection, job_id: str, state: str, *,
                   last_error: str | None, not_before: float | None = None) -> Job:
        now = self.clock()
        row = conn.execute(
            f"UPDATE jobs SET state = ?, last_error = ?, lease_expires_at = NULL,"
            f" not_before = coalesce(?, not_before), updated_at = ? WHERE id = ?"
            f" RETURNING {_COLUMNS}",
            (state, last_error, not_before, now, job_id),
        ).fetchone()
        return Job.from_row(row)
