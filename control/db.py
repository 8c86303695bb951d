"""The database for control: the one small interface both backends implement.

Handlers and models speak only to `Database`: `fetchone`, `fetchall` and `execute` run one
statement on their own (autocommit); `transaction(fn)` runs `await fn(tx)` in one transaction, with
`tx` (a `Tx`) offering the same three calls. SQL is written once, with `?` or `:name` parameters;
each backend adapts what little differs (`control.sqlite`, `control.pg`; `control.app` picks one).
A function given to `transaction` runs as if alone: SQLite serialises writers, PostgreSQL runs it
SERIALIZABLE and retries it on conflict, so it must touch nothing but the database.

The schema grows by appending a `Migration` to each dialect's list (`control.sqlite.MIGRATIONS`
and `control.pg.MIGRATIONS`), with the same version numbers for the same step; steps whose tables
are the same in both dialects are written once (`portable_steps`). `schema_version` records which
ones a database has had.
"""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from reel.logs import fields

log = logging.getLogger("reel.control.db")

T = TypeVar("T")
Params = Sequence[Any] | Mapping[str, Any]
Row = Any  # sqlite3.Row or asyncpg.Record: both index by position and by column name
INT64 = 2**63


class SchemaError(Exception):
    """The database's schema cannot be brought to what this code expects."""


class IntegrityError(Exception):
    """A constraint refused the statement (unique key, foreign key, check)."""


class UnstorableValue(ValueError):
    """A parameter no database column can hold: NUL or lone surrogates in text, a huge integer.

    Clients hear 400 (see `control.problems`): such values are never stored, so they match nothing.
    """


def check_params(params: Params) -> None:
    for value in params.values() if isinstance(params, Mapping) else params:
        if isinstance(value, str):
            if "\x00" in value:
                raise UnstorableValue("text must not contain NUL characters")
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UnstorableValue("text is not valid Unicode") from None
        elif isinstance(value, int) and not -INT64 <= value < INT64:
            raise UnstorableValue("a number is out of range")


class Statements(abc.ABC):
    """The three calls a database and a transaction both offer."""

    @abc.abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abc.abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""


class Tx(Statements):
    """Statements inside one transaction (see `Database.transaction`)."""

    @abc.abstractmethod
    async def script(self, sql: str) -> None:
        """Run several statements without parameters (migrations)."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: SQL statements, or an async function for data migrations."""

    version: int
    name: str
    apply: str | Callable[[Tx], Awaitable[None]]


_PORTABLE_STEPS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "videos and packaging jobs",
        """
        CREATE TABLE videos (
            id             TEXT PRIMARY KEY,
            title          TEXT NOT NULL,
            state          TEXT NOT NULL
                           CHECK (state IN ('queued', 'processing', 'ready', 'failed')),
            reason         TEXT,
            progress_done  {bigint},
            progress_total {bigint},
            duration       {real},
            renditions     TEXT,  -- JSON array of rendition names, once ready
            source_bytes   {bigint} NOT NULL,
            created_at     {real} NOT NULL,
            updated_at     {real} NOT NULL
        );
        CREATE TABLE jobs (
            id               TEXT PRIMARY KEY,
            video_id         TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            kind             TEXT NOT NULL,
            state            TEXT NOT NULL
                             CHECK (state IN ('queued', 'claimed', 'done', 'failed')),
            attempts         INTEGER NOT NULL DEFAULT 0,
            max_attempts     INTEGER NOT NULL,
            not_before       {real} NOT NULL,
            lease_expires_at {real},
            worker           TEXT,
            last_error       TEXT,
            created_at       {real} NOT NULL,
            updated_at       {real} NOT NULL
        );
        CREATE INDEX jobs_by_state ON jobs (state, not_before, created_at);
        CREATE INDEX jobs_by_video ON jobs (video_id);
        """,
    ),
    (
        2,
        "accounts, sessions, video metadata and ownership, tus uploads",
        """
        CREATE TABLE users (
            id            TEXT PRIMARY KEY,
            email         TEXT NOT NULL UNIQUE,  -- stored lower-cased
            name          TEXT NOT NULL,
            bio           TEXT NOT NULL DEFAULT '',
            password_hash TEXT NOT NULL,
            is_admin      INTEGER NOT NULL DEFAULT 0,
            quota_bytes   {bigint},  -- NULL: the service default
            created_at    {real} NOT NULL,
            updated_at    {real} NOT NULL
        );
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,  -- sha256 of the bearer token: a leaked table is no key
            user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at {real} NOT NULL,
            expires_at {real} NOT NULL
        );
        CREATE INDEX sessions_by_user ON sessions (user_id);
        CREATE INDEX sessions_by_expiry ON sessions (expires_at);
        ALTER TABLE videos ADD COLUMN owner_id TEXT REFERENCES users (id) ON DELETE CASCADE;
        ALTER TABLE videos ADD COLUMN description TEXT NOT NULL DEFAULT '';
        ALTER TABLE videos ADD COLUMN tags TEXT NOT NULL DEFAULT '[]';  -- JSON array
        ALTER TABLE videos ADD COLUMN language TEXT;
        ALTER TABLE videos ADD COLUMN category TEXT;
        ALTER TABLE videos ADD COLUMN privacy TEXT NOT NULL DEFAULT 'public'
            CHECK (privacy IN ('public', 'unlisted', 'private'));
        ALTER TABLE videos ADD COLUMN sha256 TEXT;
        ALTER TABLE videos ADD COLUMN views {bigint} NOT NULL DEFAULT 0;
        ALTER TABLE videos ADD COLUMN likes {bigint} NOT NULL DEFAULT 0;
        ALTER TABLE videos ADD COLUMN dislikes {bigint} NOT NULL DEFAULT 0;
        CREATE INDEX videos_by_owner ON videos (owner_id, created_at);
        CREATE INDEX videos_by_owner_sha256 ON videos (owner_id, sha256);
        CREATE INDEX videos_by_created ON videos (created_at);
        CREATE TABLE uploads (
            id         TEXT PRIMARY KEY,
            owner_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            length     {bigint} NOT NULL,
            metadata   TEXT NOT NULL,  -- JSON object from Upload-Metadata
            video_id   TEXT,           -- set once complete
            created_at {real} NOT NULL,
            expires_at {real} NOT NULL
        );
        CREATE INDEX uploads_by_owner ON uploads (owner_id);
        CREATE INDEX uploads_by_expiry ON uploads (expires_at);
        """,
    ),
    (
        3,
        "reviews, ratings, comments, follows, views",
        """
        CREATE TABLE reviews (
            video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
            body       TEXT NOT NULL,
            created_at {real} NOT NULL,
            updated_at {real} NOT NULL,
            PRIMARY KEY (video_id, user_id)
        );
        CREATE INDEX reviews_by_video ON reviews (video_id, updated_at);
        CREATE TABLE ratings (
            video_id TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            value    INTEGER NOT NULL CHECK (value IN (-1, 1)),
            PRIMARY KEY (video_id, user_id)
        );
        CREATE TABLE comments (
            id         TEXT PRIMARY KEY,
            video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            parent_id  TEXT REFERENCES comments (id) ON DELETE CASCADE,
            body       TEXT NOT NULL,
            created_at {real} NOT NULL
        );
        CREATE INDEX comments_by_thread ON comments (video_id, parent_id, created_at);
        CREATE INDEX comments_by_parent ON comments (parent_id, created_at);
        CREATE TABLE follows (
            follower_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            followee_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at  {real} NOT NULL,
            PRIMARY KEY (follower_id, followee_id)
        );
        CREATE INDEX follows_by_followee ON follows (followee_id);
        CREATE TABLE views (
            video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            viewer     TEXT NOT NULL,     -- user id, or a hash of the address
            bucket     {bigint} NOT NULL,  -- which counting window: one view per viewer in each
            created_at {real} NOT NULL,
            PRIMARY KEY (video_id, viewer, bucket)
        );
        CREATE INDEX views_by_time ON views (created_at, video_id);
        CREATE INDEX videos_feed ON videos (owner_id, state, privacy, created_at);
        """,
    ),
)


# Step 6 (live streams), the part both dialects share; each adds how it widens `videos.state`
# and what it indexes for search (`control.sqlite`, `control.pg`).
LIVE_STATES = ("queued", "processing", "ready", "failed", "waiting", "live")
_LIVE_TABLES = """
ALTER TABLE videos ADD COLUMN kind TEXT NOT NULL DEFAULT 'upload'
    CHECK (kind IN ('upload', 'live'));
ALTER TABLE videos ADD COLUMN viewers {bigint};  -- current viewers, while live (ingest reports)
CREATE INDEX videos_by_state ON videos (state);
CREATE TABLE live_streams (
    video_id    TEXT PRIMARY KEY REFERENCES videos (id) ON DELETE CASCADE,
    key_hash    TEXT NOT NULL UNIQUE,  -- sha256 of the stream key: the key itself is never stored
    dvr_seconds INTEGER NOT NULL,
    publishers  INTEGER NOT NULL DEFAULT 0,  -- publishers admitted so far: the handle's suffix
    publisher   TEXT NOT NULL DEFAULT 'none'
                CHECK (publisher IN ('none', 'authorized', 'connected', 'gone')),
    seen_at     {real},  -- ingest's last word on this stream
    gone_at     {real},  -- when the publisher went: the grace period runs from here
    ended_at    {real},
    created_at  {real} NOT NULL
);
"""


def live_tables(real: str, bigint: str) -> str:
    """The tables and columns of live streams, in a dialect's type names."""
    return _LIVE_TABLES.format(real=real, bigint=bigint)


def portable_steps(real: str, bigint: str) -> tuple[Migration, ...]:
    """Steps 1-3, the same tables in both dialects: only the float and 64-bit integer
    type names differ (SQLite's INTEGER is already 64-bit)."""
    return tuple(Migration(version, name, sql.format(real=real, bigint=bigint))
                 for version, name, sql in _PORTABLE_STEPS)


class Database(Statements):
    """Where control keeps everything; `open()` connects and migrates, `close()` lets go."""

    dialect: ClassVar[str]

    def __init__(self, migrations: Sequence[Migration]) -> None:
        self.migrations = tuple(migrations)

    @property
    def stale(self) -> Statements:
        """Where reads that may be a moment old go: a read replica when there is one (PostgreSQL,
        `control.pg`), else the database itself. Never for what a caller just wrote."""
        return self

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def transaction(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        """`await fn(tx)` in one transaction: committed when it returns, rolled back if it raises."""

    async def lock_schema(self, tx: Tx) -> None:
        """Inside a migration's transaction: keep other processes from migrating at once."""
        return None  # SQLite: BEGIN IMMEDIATE already keeps every other writer out

    async def migrate(self) -> int:
        """Apply the migrations the database has not had, each in its own transaction."""
        migrations = self.migrations
        versions = [m.version for m in migrations]
        if versions != list(range(1, len(versions) + 1)):
            raise SchemaError(f"migrations must be numbered 1, 2, 3, ... in order; got {versions}")

        async def step(tx: Tx) -> Migration | None:
            await self.lock_schema(tx)
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER PRIMARY KEY,"
                             " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)")
            row = await tx.fetchone("SELECT coalesce(max(version), 0) FROM schema_version")
            current = int(row[0])
            if current > len(migrations):
                raise SchemaError(f"the database is at schema version {current}, newer than this "
                                  f"code ({len(migrations)}): upgrade reel")
            if current == len(migrations):
                return None
            migration = migrations[current]
            if isinstance(migration.apply, str):
                await tx.script(migration.apply)
            else:
                await migration.apply(tx)
            await tx.execute("INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                             (migration.version, migration.name, time.time()))
            return migration

        while (done := await self._migration_transaction(step)) is not None:
            log.info("migrated", extra=fields(dialect=self.dialect, version=done.version,
                                              name=done.name))
        return len(migrations)

    async def _migration_transaction(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        return await self.transaction(fn)
