"""SQLite for control: one connection, owned by one dedicated thread, and ordered migrations.

Every statement runs on that thread, so the event loop never blocks on SQLite and a function given
to `Database.transaction` runs alone: nothing interleaves with it. The schema grows by appending a
`Migration` to `MIGRATIONS`; `schema_version` records which ones a database has had.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from reel.logs import fields

log = logging.getLogger("reel.control.db")

T = TypeVar("T")
Params = Sequence[Any] | dict[str, Any]


class SchemaError(Exception):
    """The database's schema cannot be brought to what this code expects."""


@dataclass(frozen=True)
class Migration:
    """One step of the schema: SQL statements, or a function for data migrations."""

    version: int
    name: str
    apply: str | Callable[[sqlite3.Connection], None]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "videos and packaging jobs",
        """
        CREATE TABLE videos (
            id             TEXT PRIMARY KEY,
            title          TEXT NOT NULL,
            state          TEXT NOT NULL
                           CHECK (state IN ('queued', 'processing', 'ready', 'failed')),
            reason         TEXT,
            progress_done  INTEGER,
            progress_total INTEGER,
            duration       REAL,
            renditions     TEXT,  -- JSON array of rendition names, once ready
            source_bytes   INTEGER NOT NULL,
            created_at     REAL NOT NULL,
            updated_at     REAL NOT NULL
        );
        CREATE TABLE jobs (
            id               TEXT PRIMARY KEY,
            video_id         TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            kind             TEXT NOT NULL,
            state            TEXT NOT NULL
                             CHECK (state IN ('queued', 'claimed', 'done', 'failed')),
            attempts         INTEGER NOT NULL DEFAULT 0,
            max_attempts     INTEGER NOT NULL,
            not_before       REAL NOT NULL,
            lease_expires_at REAL,
            worker           TEXT,
            last_error       TEXT,
            created_at       REAL NOT NULL,
            updated_at       REAL NOT NULL
        );
        CREATE INDEX jobs_by_state ON jobs (state, not_before, created_at);
        CREATE INDEX jobs_by_video ON jobs (video_id);
        """,
    ),
    Migration(
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
            quota_bytes   INTEGER,  -- NULL: the service default
            created_at    REAL NOT NULL,
            updated_at    REAL NOT NULL
        );
        CREATE TABLE sessions (
            token_hash TEXT PRIMARY KEY,  -- sha256 of the bearer token: a leaked table is no key
            user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
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
        ALTER TABLE videos ADD COLUMN views INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE videos ADD COLUMN likes INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE videos ADD COLUMN dislikes INTEGER NOT NULL DEFAULT 0;
        CREATE INDEX videos_by_owner ON videos (owner_id, created_at);
        CREATE INDEX videos_by_owner_sha256 ON videos (owner_id, sha256);
        CREATE INDEX videos_by_created ON videos (created_at);
        CREATE TABLE uploads (
            id         TEXT PRIMARY KEY,
            owner_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            length     INTEGER NOT NULL,
            metadata   TEXT NOT NULL,  -- JSON object from Upload-Metadata
            video_id   TEXT,           -- set once complete
            created_at REAL NOT NULL,
            expires_at REAL NOT NULL
        );
        CREATE INDEX uploads_by_owner ON uploads (owner_id);
        CREATE INDEX uploads_by_expiry ON uploads (expires_at);
        """,
    ),
    Migration(
        3,
        "reviews, ratings, comments, follows, views",
        """
        CREATE TABLE reviews (
            video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            rating     INTEGER NOT NULL CHECK (rating BETWEEN 1 AND 5),
            body       TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
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
            created_at REAL NOT NULL
        );
        CREATE INDEX comments_by_thread ON comments (video_id, parent_id, created_at);
        CREATE INDEX comments_by_parent ON comments (parent_id, created_at);
        CREATE TABLE follows (
            follower_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            followee_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            created_at  REAL NOT NULL,
            PRIMARY KEY (follower_id, followee_id)
        );
        CREATE INDEX follows_by_followee ON follows (followee_id);
        CREATE TABLE views (
            video_id   TEXT NOT NULL REFERENCES videos (id) ON DELETE CASCADE,
            viewer     TEXT NOT NULL,     -- user id, or a hash of the address
            bucket     INTEGER NOT NULL,  -- which counting window: one view per viewer in each
            created_at REAL NOT NULL,
            PRIMARY KEY (video_id, viewer, bucket)
        );
        CREATE INDEX views_by_time ON views (created_at, video_id);
        CREATE INDEX videos_feed ON videos (owner_id, state, privacy, created_at);
        """,
    ),
    Migration(
        4,
        "full-text search over public ready videos",
        # Contentless FTS5 keyed by the videos rowid: only what is public and ready is indexed, so
        # searching needs no visibility filter. Triggers pass the old values to 'delete', which
        # is how contentless tables forget a row. (Nothing here runs VACUUM, which could renumber
        # rowids of a table without an INTEGER PRIMARY KEY.)
        """
        CREATE VIRTUAL TABLE videos_fts USING fts5 (
            title, description, tags,
            content = '', tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
        );
        CREATE TRIGGER videos_fts_insert AFTER INSERT ON videos
        WHEN new.state = 'ready' AND new.privacy = 'public' BEGIN
            INSERT INTO videos_fts (rowid, title, description, tags)
            VALUES (new.rowid, new.title, new.description, new.tags);
        END;
        CREATE TRIGGER videos_fts_delete AFTER DELETE ON videos
        WHEN old.state = 'ready' AND old.privacy = 'public' BEGIN
            INSERT INTO videos_fts (videos_fts, rowid, title, description, tags)
            VALUES ('delete', old.rowid, old.title, old.description, old.tags);
        END;
        CREATE TRIGGER videos_fts_update
        AFTER UPDATE OF title, description, tags, state, privacy ON videos BEGIN
            INSERT INTO videos_fts (videos_fts, rowid, title, description, tags)
            SELECT 'delete', old.rowid, old.title, old.description, old.tags
            WHERE old.state = 'ready' AND old.privacy = 'public';
            INSERT INTO videos_fts (rowid, title, description, tags)
            SELECT new.rowid, new.title, new.description, new.tags
            WHERE new.state = 'ready' AND new.privacy = 'public';
        END;
        """,
    ),
)


def split_statements(script: str) -> Iterator[str]:
    """The statements of an SQL script, one at a time (semicolons in literals are kept)."""
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                yield buf.strip()
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise SchemaError(f"incomplete SQL statement: {buf.strip()[:80]!r}")


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """Apply the migrations `conn` has not had, each in its own transaction; returns the version.

    `conn` must be in autocommit mode (isolation_level=None).
    """
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise SchemaError(f"migrations must be numbered 1, 2, 3, ... in order; got {versions}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
    )
    current = schema_version(conn)
    if current > len(migrations):
        raise SchemaError(
            f"the database is at schema version {current}, newer than this code "
            f"({len(migrations)}): upgrade reel"
        )
    for migration in migrations[current:]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            if isinstance(migration.apply, str):
                for statement in split_statements(migration.apply):
                    conn.execute(statement)
            else:
                migration.apply(conn)
            conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                (migration.version, migration.name, time.time()),
            )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        log.info("migrated", extra=fields(version=migration.version, name=migration.name))
    return schema_version(conn)


class Database:
    """One SQLite connection in WAL mode, used only from its own worker thread.

    `open()` connects and migrates, `close()` closes; in between, `run(fn)` calls `fn(conn)` on the
    database thread and `transaction(fn)` does the same inside BEGIN IMMEDIATE ... COMMIT.
    """

    def __init__(self, path: Path | str, migrations: Sequence[Migration] = MIGRATIONS) -> None:
        self.path = Path(path)
        self._migrations = tuple(migrations)
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    def __repr__(self) -> str:
        return f"Database({str(self.path)!r})"

    async def open(self) -> None:
        if self._executor is not None:
            raise RuntimeError("database already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reel-sqlite")
        try:
            self._conn = await self._submit(self._connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise SchemaError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")
            migrate(conn, self._migrations)
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        executor, conn = self._executor, self._conn
        if executor is None:
            return
        self._executor = self._conn = None
        if conn is not None:
            await asyncio.get_running_loop().run_in_executor(executor, conn.close)
        executor.shutdown(wait=False)

    async def _submit(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the database thread (autocommit: each statement is its own transaction)."""
        return await self._submit(lambda: fn(self._connection()))

    async def transaction(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the database thread, in one write transaction; rolled back if it raises."""

        def atomically() -> T:
            conn = self._connection()
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = fn(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        return await self._submit(atomically)

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError("database is not open")
        return self._conn

    async def fetchone(self, sql: str, params: Params = ()) -> sqlite3.Row | None:
        return await self.run(lambda conn: conn.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Params = ()) -> list[sqlite3.Row]:
        return await self.run(lambda conn: conn.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        return await self.run(functools.partial(_rowcount, sql=sql, params=params))


def _rowcount(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return conn.execute(sql, params).rowcount
