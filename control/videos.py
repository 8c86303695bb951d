"""Videos: the `videos` table, its states, and how packaging jobs move them.

queued --claim--> processing --complete--> ready
   ^                  |
   +--- retryable ----+--- permanent / out of attempts ---> failed

A live stream is a video too (`kind` live): waiting -> live -> processing -> ready (or failed),
moved by `control.live`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from control.db import Database, Row, Statements, Tx
from control.hotcache import TtlCache
from control.jobs import Job, JobQueue

STATES = ("queued", "processing", "ready", "failed", "waiting", "live")
ON_AIR = ("waiting", "live")  # a live video's states before it ends: it plays live


def new_video_id() -> str:
    """12 URL-safe characters (72 random bits)."""
    return secrets.token_urlsafe(9)


def source_prefix(video_id: str) -> str:
    return f"sources/{video_id}/"


def source_key(video_id: str) -> str:
    return f"{source_prefix(video_id)}source"


def output_prefix(video_id: str) -> str:
    return f"vod/{video_id}/"


def iso8601(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z"
    )


PRIVACY = ("public", "unlisted", "private")


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
    owner_id: str | None
    description: str
    tags: tuple[str, ...]
    language: str | None
    category: str | None
    privacy: str
    sha256: str | None
    views: int
    likes: int
    dislikes: int
    preview: str | None
    kind: str
    viewers: int | None

    @classmethod
    def from_row(cls, row: Row) -> Video:
        values = {name: row[name] for name in cls.__dataclass_fields__}
        values["renditions"] = tuple(json.loads(row["renditions"] or "[]"))
        values["tags"] = tuple(json.loads(row["tags"] or "[]"))
        return cls(**values)

    def visible_to(self, user_id: str | None, is_admin: bool = False) -> bool:
        """Anyone with the link sees public and unlisted videos; private ones only their owner."""
        return self.privacy != "private" or is_admin or (user_id is not None
                                                         and user_id == self.owner_id)

    def to_json(self, *, control_url: str, geo_url: str, token: str | None = None) -> dict[str, Any]:
        """The public `<video>` object of the API; `token` (a private or unlisted video's
        playback token) goes into its media URLs, as the path segment every relative URI of
        the playlists keeps."""
        ready = self.state == "ready"
        on_air = self.kind == "live" and self.state in ON_AIR
        media = f"vod/{self.id}/~{token}" if token is not None else f"vod/{self.id}"
        live = f"live/{self.id}/~{token}" if token is not None else f"live/{self.id}"
        progress = None
        if ready:  # complete, whatever the worker last counted (or 1 of 1 when it never did)
            total = self.progress_total or 1
            progress = {"done": total, "total": total}
        elif self.progress_done is not None and self.progress_total is not None:
            progress = {"done": self.progress_done, "total": self.progress_total}
        return {
            "id": self.id,
            "title": self.title,
            "state": self.state,
            "reason": self.reason,
            "progress": progress,
            "duration": self.duration,
            "created_at": iso8601(self.created_at),
            # The steered master (HLS Content Steering): every HLS player can use it, and those
            # that steer move between edges mid-play. {geo}/vod/... still answers with a 302.
            "playback_url": (f"{geo_url}/steer/{media}/master.m3u8" if ready else
                             f"{geo_url}/steer/{live}/master.m3u8" if on_air else None),
            "preview_url": (f"{geo_url}/{media}/{self.preview}"
                            if self.state == "processing" and self.preview else None),
            "watch_url": f"{control_url}/watch/{self.id}",
            "poster_url": f"{geo_url}/{media}/thumbs/poster.jpg" if ready else None,
            "owner_id": self.owner_id,
            "description": self.description,
            "tags": list(self.tags),
            "language": self.language,
            "category": self.category,
            "privacy": self.privacy,
            "views": self.views,
            "likes": self.likes,
            "dislikes": self.dislikes,
            "kind": self.kind,
            "live": self.kind == "live" and self.state == "live",
            "viewers": self.viewers if self.state == "live" else None,
        }


COLUMNS = ", ".join(Video.__dataclass_fields__)
EDITABLE = ("title", "description", "tags", "language", "category", "privacy")


@dataclass(frozen=True)
class Upload:
    """What a new video is made of: the stored source and what its creator said about it."""

    video_id: str
    owner_id: str
    source_bytes: int
    sha256: str
    metadata: Mapping[str, Any]  # title and any EDITABLE field


class Videos:
    """The videos of `db`."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time, *,
                 cache_seconds: float = 1.0, cache_entries: int = 10_000) -> None:
        self.db = db
        self.clock = clock
        # For the view path only (`recent`): an edit or delete here drops the entry at once; one
        # made by another process is seen within `cache_seconds`.
        self.hot: TtlCache[str, Video] = TtlCache(cache_seconds, cache_entries)

    async def recent(self, video_id: str, db: Statements | None = None) -> Video | None:
        """The video as read at most `cache_seconds` ago (or just now)."""
        if (video := self.hot.get(video_id)) is not None:
            return video
        generation = self.hot.generation
        video = await self.get(video_id, db)
        if video is not None:
            self.hot.put(video_id, video, generation)
        return video

    def counted(self, video_id: str, views: int) -> None:
        """The view count a merge left: the cached video shows it (never an older one)."""
        if (video := self.hot.get(video_id)) is not None and views > video.views:
            self.hot.refresh(video_id, replace(video, views=views))

    async def get(self, video_id: str, db: Statements | None = None) -> Video | None:
        """The video, read from `db` (e.g. a replica; by default the primary)."""
        row = await (db or self.db).fetchone(f"SELECT {COLUMNS} FROM videos WHERE id = ?",
                                             (video_id,))
        return None if row is None else Video.from_row(row)

    async def create(self, upload: Upload, queue: JobQueue) -> tuple[Video, Job | None]:
        """A queued video and its packaging job, committed together; or, when the same owner
        already has a video of the same content, that video and no job."""

        async def insert(tx: Tx) -> tuple[Video, Job | None]:
            if (same := await self.with_content(upload.owner_id, upload.sha256, tx)) is not None:
                return same, None
            now = self.clock()
            meta = upload.metadata
            await tx.execute(
                "INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at,"
                " owner_id, sha256, description, tags, language, category, privacy)"
                " VALUES (?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (upload.video_id, meta.get("title") or "Untitled", upload.source_bytes, now, now,
                 upload.owner_id, upload.sha256, meta.get("description", ""),
                 json.dumps(list(meta.get("tags", ()))), meta.get("language"),
                 meta.get("category"), meta.get("privacy", "public")),
            )
            job = await queue.enqueue_in(tx, upload.video_id, "package")
            row = await tx.fetchone(f"SELECT {COLUMNS} FROM videos WHERE id = ?",
                                    (upload.video_id,))
            return Video.from_row(row), job

        return await self.db.transaction(insert)

    async def insert_copy(self, source: Video, video_id: str, meta: Mapping[str, Any]) -> Video:
        """A ready video sharing `source`'s renditions (their objects already copied to its id).

        It has no source of its own: no bytes against a quota, no sha256 to deduplicate on."""
        now = self.clock()
        return Video.from_row(await self.db.transaction(lambda tx: tx.fetchone(
            "INSERT INTO videos (id, title, state, source_bytes, created_at, updated_at, owner_id,"
            " duration, renditions, description, tags, language, category, privacy)"
            " VALUES (?, ?, 'ready', 0, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            f" RETURNING {COLUMNS}",
            (video_id, meta.get("title") or source.title, now, now, source.owner_id,
             source.duration, json.dumps(list(source.renditions)),
             meta.get("description", source.description),
             json.dumps(list(meta.get("tags", source.tags))),
             meta.get("language", source.language), meta.get("category", source.category),
             meta.get("privacy", source.privacy)))))

    async def with_content(self, owner_id: str, sha256: str,
                           db: Database | Tx | None = None) -> Video | None:
        """The owner's (oldest) video whose source has this SHA-256, if any."""
        row = await (db or self.db).fetchone(
            f"SELECT {COLUMNS} FROM videos WHERE owner_id = ? AND sha256 = ?"
            f" ORDER BY created_at LIMIT 1", (owner_id, sha256))
        return None if row is None else Video.from_row(row)

    async def update(self, video_id: str, changes: Mapping[str, Any]) -> Video | None:
        values = {k: (json.dumps(list(v)) if k == "tags" else v) for k, v in changes.items()
                  if k in EDITABLE}
        values["updated_at"] = self.clock()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        try:
            row = await self.db.transaction(lambda tx: tx.fetchone(
                f"UPDATE videos SET {assignments} WHERE id = :id RETURNING {COLUMNS}",
                {**values, "id": video_id}))
        finally:
            self.hot.discard(video_id)
        return None if row is None else Video.from_row(row)

    async def delete(self, video_id: str) -> bool:
        try:
            return await self.db.execute("DELETE FROM videos WHERE id = ?", (video_id,)) > 0
        finally:
            self.hot.discard(video_id)

    async def bytes_used(self, owner_id: str) -> int:
        """Sources stored plus uploads under way: what counts against the owner's quota."""
        row = await self.db.fetchone(
            "SELECT (SELECT coalesce(sum(source_bytes), 0) FROM videos WHERE owner_id = :o)"
            " + (SELECT coalesce(sum(length), 0) FROM uploads"
            "    WHERE owner_id = :o AND video_id IS NULL)", {"o": owner_id})
        return int(row[0])

    async def by_owner(self, owner_id: str, *, include_hidden: bool, limit: int,
                       after: tuple[float, str] | None) -> list[Video]:
        """The owner's videos, newest first (keyset `after` = (created_at, id) of the last seen)."""
        sql = f"SELECT {COLUMNS} FROM videos WHERE owner_id = ?"
        params: list[Any] = [owner_id]
        if not include_hidden:
            sql += " AND privacy = 'public'"
        if after is not None:
            sql += " AND (created_at < ? OR (created_at = ? AND id < ?))"
            params += [after[0], after[0], after[1]]
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        rows = await self.db.fetchall(sql, (*params, limit))
        return [Video.from_row(r) for r in rows]


class VideoJobHooks:
    """Keeps a video's state in step with its packaging job (a `control.jobs.JobHooks`)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock

    async def _update(self, tx: Tx, video_id: str, **values: Any) -> None:
        values["updated_at"] = self.clock()
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        await tx.execute(f"UPDATE videos SET {assignments} WHERE id = :id",
                         {**values, "id": video_id})

    async def claimed(self, tx: Tx, job: Job) -> None:
        await self._update(tx, job.video_id, state="processing", reason=None,
                           progress_done=None, progress_total=None, preview=None)

    async def progressed(self, tx: Tx, job: Job, progress: tuple[int, int] | None,
                         preview: str | None) -> None:
        values: dict[str, Any] = {}
        if progress is not None:
            values.update(progress_done=progress[0], progress_total=progress[1])
        if preview is not None:
            values["preview"] = preview
        await self._update(tx, job.video_id, **values)

    async def completed(self, tx: Tx, job: Job, result: Mapping[str, Any]) -> None:
        await self._update(tx, job.video_id, state="ready", reason=None, preview=None,
                           duration=result.get("duration"),
                           renditions=json.dumps(list(result.get("renditions", ()))))

    async def retrying(self, tx: Tx, job: Job, reason: str) -> None:
        await self._update(tx, job.video_id, state="queued", reason=None,
                           progress_done=None, progress_total=None, preview=None)

    async def failed(self, tx: Tx, job: Job, reason: str) -> None:
        await self._update(tx, job.video_id, state="failed", reason=reason, preview=None)
