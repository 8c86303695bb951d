"""Videos: the `videos` table, its states, and how packaging jobs move them.

queued --claim--> processing --complete--> ready
   ^                  |
   +--- retryable ----+--- permanent / out of attempts ---> failed
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from control.db import Database
from control.jobs import Job, JobQueue

STATES = ("queued", "processing", "ready", "failed")


def new_video_id() -> str:
    """12 URL-safe characters (72 random bits)."""
    return secrets.token_urlsafe(9)


def source_key(video_id: str) -> str:
    return f"sources/{video_id}/source"


def output_prefix(video_id: str) -> str:
    return f"vod/{video_id}/"


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


@dataclass(frozen=True)
class Video:
    id: str
    title: str
    state: str
    reason: str | None
    progress_done: int | None
    progress_total: int | None
    duration: float | None
    renditions: tuple[str, ...]
    source_bytes: int
    created_at: float

    @classmethod
    def from_row(cls, row: sqlite3.Row) -> Video:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["renditions"] = tuple(json.loads(row["renditions"] or "[]"))
        return cls(**values)

    def to_json(self, *, control_url: str, geo_url: str) -> dict[str, Any]:
        """The public `<video>` object of the API."""
        ready = self.state == "ready"
        progress = None
        if self.progress_done is not None and self.progress_total is not None:
            progress = {"done": self.progress_done, "total": self.progress_total}
        return {
            "id": self.id,
            "title": self.title,
            "state": self.state,
            "reason": self.reason,
            "progress": progress,
            "duration": self.duration,
            "created_at": iso8601(self.created_at),
            "playback_url": f"{geo_url}/vod/{self.id}/master.m3u8" if ready else None,
            "watch_url": f"{control_url}/watch/{self.id}",
            "poster_url": f"{geo_url}/vod/{self.id}/thumbs/poster.jpg" if ready else None,
        }


_COLUMNS = ", ".join(Video.__dataclass_fields__)


class Videos:
    """The videos of `db`."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def get(self, video_id: str) -> Video | None:
        row = await self.db.fetchone(f"SELECT {_COLUMNS} FROM videos WHERE id = ?", (video_id,))
        return None if row is None else Video.from_row(row)

    async def create(
        self, video_id: str, title: str, source_bytes: int, queue: JobQueue
    ) -> tuple[Video, Job]:
        """A queued video and its packaging job, committed together."""

        def insert(conn: sqlite3.Connection) -> tuple[Video, Job]:
            now = self.clock()
            conn.execute(
                "INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at)"
                " VALUES (?, ?, 'queued', ?, ?, ?)",
                (video_id, title, source_bytes, now, now),
            )
            job = queue.enqueue_in(conn, video_id, "package")
            row = conn.execute(f"SELECT {_COLUMNS} FROM videos WHERE id = ?", (video_id,))
            return Video.from_row(row.fetchone()), job

        return await self.db.transaction(insert)


class VideoJobHooks:
    """Keeps a video's state in step with its packaging job (a `control.jobs.JobHooks`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    def _update(self, conn: sqlite3.Connection, video_id: str, **values: Any) -> None:
        values["updated_at"] = self.clock()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        conn.execute(f"UPDATE videos SET {assignments} WHERE id = :id", {**values, "id": video_id})

    def claimed(self, conn: sqlite3.Connection, job: Job) -> None:
        self._update(conn, job.video_id, state="processing", reason=None,
                     progress_done=None, progress_total=None)

    def progressed(self, conn: sqlite3.Connection, job: Job, done: int, total: int) -> None:
        self._update(conn, job.video_id, progress_done=done, progress_total=total)

    def completed(self, conn: sqlite3.Connection, job: Job, result: Mapping[str, Any]) -> None:
        self._update(conn, job.video_id, state="ready", reason=None,
                     duration=result.get("duration"),
                     renditions=json.dumps(list(result.get("renditions", ()))))

    def retrying(self, conn: sqlite3.Connection, job: Job, reason: str) -> None:
        self._update(conn, job.video_id, state="queued", reason=None,
                     progress_done=None, progress_total=None)

    def failed(self, conn: sqlite3.Connection, job: Job, reason: str) -> None:
        self._update(conn, job.video_id, state="failed", reason=reason)
