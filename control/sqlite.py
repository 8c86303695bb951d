"""SQLite for control (the default): the `control.db.Database` interface over one file in WAL mode.

`SQLiteDatabase`: one writer connection owned by one thread (nothing interleaves with a
transaction), and a few read-only connections on their own threads, so reads (search above all)
do not queue behind writes; WAL lets them read while the writer writes. Search is FTS5 (bm25).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from control.db import (
    Database,
    IntegrityError,
    Migration,
    Params,
    Row,
    SchemaError,
    Tx,
    UnstorableValue,
    check_params,
    live_tables,
    portable_steps,
)

T = TypeVar("T")

_OLD_STATES = "CHECK (state IN ('queued', 'processing', 'ready', 'failed'))"
_NEW_STATES = "CHECK (state IN ('queued', 'processing', 'ready', 'failed', 'waiting', 'live'))"


def _fts_triggers(indexed: str) -> str:
    """Triggers keeping the contentless FTS5 table to the public videos whose state is in
    `indexed` (an SQL list): step 4 indexed ready videos, step 6 live ones too. The old values go
    to 'delete', which is how contentless tables forget a row."""
    return f"""
        CREATE TRIGGER videos_fts_insert AFTER INSERT ON videos
        WHEN new.state IN ({indexed}) AND new.privacy = 'public' BEGIN
            INSERT INTO videos_fts (rowid, title, description, tags)
            VALUES (new.rowid, new.title, new.description, new.tags);
        END;
        CREATE TRIGGER videos_fts_delete AFTER DELETE ON videos
        WHEN old.state IN ({indexed}) AND old.privacy = 'public' BEGIN
            INSERT INTO videos_fts (videos_fts, rowid, title, description, tags)
            VALUES ('delete', old.rowid, old.title, old.description, old.tags);
        END;
        CREATE TRIGGER videos_fts_update
        AFTER UPDATE OF title, description, tags, state, privacy ON videos BEGIN
            INSERT INTO videos_fts (videos_fts, rowid, title, description, tags)
            SELECT 'delete', old.rowid, old.title, old.description, old.tags
            WHERE old.state IN ({indexed}) AND old.privacy = 'public';
            INSERT INTO videos_fts (rowid, title, description, tags)
            SELECT new.rowid, new.title, new.description, new.tags
            WHERE new.state IN ({indexed}) AND new.privacy = 'public';
        END;
        """


async def _live_streams(tx: Tx) -> None:
    """Step 6. `videos.state` gains 'waiting' and 'live': SQLite cannot alter a CHECK, so its
    text is widened in place, as SQLite's ALTER TABLE page describes for loosening a
    constraint (every existing row still satisfies it; nothing on disk changes)."""
    version = (await tx.fetchone("PRAGMA schema_version"))[0]
    await tx.execute("PRAGMA writable_schema = ON")
    changed = await tx.execute("UPDATE sqlite_master SET sql = replace(sql, ?, ?)"
                               " WHERE type = 'table' AND name = 'videos'",
                               (_OLD_STATES, _NEW_STATES))
    await tx.execute(f"PRAGMA schema_version = {int(version) + 1}")
    await tx.execute("PRAGMA writable_schema = OFF")
    if changed != 1:
        raise SchemaError("videos: the state CHECK to widen was not found")
    # Search indexes live videos too, while they are live (as it does ready ones).
    await tx.script(live_tables(real="REAL", bigint="INTEGER")
                    + "DROP TRIGGER videos_fts_insert; DROP TRIGGER videos_fts_delete;"
                      " DROP TRIGGER videos_fts_update;" + _fts_triggers("'ready', 'live'"))


MIGRATIONS: tuple[Migration, ...] = (
    *portable_steps(real="REAL", bigint="INTEGER"),
    Migration(
        4,
        "full-text search over public ready videos",
        # Contentless FTS5 keyed by the videos rowid: only what is public and ready is indexed, so
        # searching needs no visibility filter. (Nothing here runs VACUUM, which could renumber
        # rowids of a table without an INTEGER PRIMARY KEY.)
        """
        CREATE VIRTUAL TABLE videos_fts USING fts5 (
            title, description, tags,
            content = '', tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
        );
        """ + _fts_triggers("'ready'"),
    ),
    Migration(
        5,
        "preview playlist while processing",
        "ALTER TABLE videos ADD COLUMN preview TEXT;",
    ),
    Migration(6, "live streams: stream keys, publishers, viewers", _live_streams),
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


def _integrity(fn: Callable[[], T]) -> T:
    try:
        return fn()
    except sqlite3.IntegrityError as exc:
        raise IntegrityError(str(exc)) from None
    except OverflowError:
        raise UnstorableValue("a number is out of range") from None


class _SQLiteTx(Tx):
    def __init__(self, db: SQLiteDatabase) -> None:
        self._db = db

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        check_params(params)
        return await self._db._write(lambda c: c.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        check_params(params)
        return await self._db._write(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        check_params(params)
        return await self._db._write(lambda c: c.execute(sql, params).rowcount)

    async def script(self, sql: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            for statement in split_statements(sql):
                conn.execute(statement)

        await self._db._write(run)


class SQLiteDatabase(Database):
    """A file in WAL mode: one writer connection on its own thread, `readers` read connections.

    Writes (autocommit statements and transactions) take turns on the writer; `fetchone` and
    `fetchall` outside a transaction go to a reader, so they never wait for a write.
    """

    dialect = "sqlite"

    def __init__(self, path: Path | str, migrations: Sequence[Migration] = MIGRATIONS, *,
                 readers: int = 4) -> None:
        super().__init__(migrations)
        self.path = Path(path)
        self.readers = max(1, readers)
        self._writer: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._write_lock = asyncio.Lock()
        self._reading: ThreadPoolExecutor | None = None
        self._idle: asyncio.Queue[sqlite3.Connection] | None = None
        self._reader_conns: list[sqlite3.Connection] = []

    def __repr__(self) -> str:
        return f"SQLiteDatabase({str(self.path)!r})"

    async def open(self) -> None:
        if self._writer is not None:
            raise RuntimeError("database already open")
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reel-sqlite")
        try:
            self._conn = await self._on_writer(self._connect_writer)
            await self.migrate()
            self._reading = ThreadPoolExecutor(max_workers=self.readers,
                                               thread_name_prefix="reel-sqlite-read")
            loop = asyncio.get_running_loop()
            self._idle = asyncio.Queue()
            for _ in range(self.readers):
                conn = await loop.run_in_executor(self._reading, self._connect_reader)
                self._reader_conns.append(conn)
                self._idle.put_nowait(conn)
        except BaseException:
            await self.close()
            raise

    def _connect_writer(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0,
                               check_same_thread=False)
        try:
            conn.row_factory = sqlite3.Row
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise SchemaError(f"{self.path}: cannot use WAL journal mode (got {mode})")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA busy_timeout = 5000")
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=5.0,
                               check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA query_only = ON")
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA cache_size = -32768")  # 32 MiB of pages per reader
        conn.execute("PRAGMA mmap_size = 1073741824")
        return conn

    async def close(self) -> None:
        writer, conn, reading = self._writer, self._conn, self._reading
        self._writer = self._conn = self._reading = self._idle = None
        readers, self._reader_conns = self._reader_conns, []
        loop = asyncio.get_running_loop()
        if reading is not None:
            for reader in readers:
                await loop.run_in_executor(reading, reader.close)
            reading.shutdown(wait=False)
        if writer is not None:
            if conn is not None:
                await loop.run_in_executor(writer, conn.close)
            writer.shutdown(wait=False)

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return await asyncio.get_running_loop().run_in_executor(self._writer, _integrity_of(fn))

    async def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """`fn(conn)` on the writer thread (the caller holds the write turn)."""
        conn = self._conn
        if conn is None:
            raise RuntimeError("database is not open")
        return await self._on_writer(lambda: fn(conn))

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._idle is None or self._reading is None:
            raise RuntimeError("database is not open")
        idle, reading = self._idle, self._reading
        conn = await idle.get()
        try:
            return await asyncio.get_running_loop().run_in_executor(
                reading, _integrity_of(lambda: fn(conn)))
        finally:
            idle.put_nowait(conn)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        check_params(params)
        return await self._read(lambda c: c.execute(sql, params).fetchone())

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        check_params(params)
        return await self._read(lambda c: c.execute(sql, params).fetchall())

    async def execute(self, sql: str, params: Params = ()) -> int:
        check_params(params)
        async with self._write_lock:
            return await self._write(lambda c: c.execute(sql, params).rowcount)

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        async with self._write_lock:
            await self._write(lambda c: c.execute("BEGIN IMMEDIATE"))
            try:
                result = await fn(_SQLiteTx(self))
                await asyncio.shield(self._write(lambda c: c.execute("COMMIT")))
            except BaseException:
                # Queued on the writer thread before the turn passes on, even when cancelled.
                await asyncio.shield(self._write(_rollback))
                raise
            return result


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _integrity_of(fn: Callable[[], T]) -> Callable[[], T]:
    return lambda: _integrity(fn)
