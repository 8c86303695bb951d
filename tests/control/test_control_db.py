"""The database layer: migrations and schema_version, transactions, SQLite's writer and readers."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from control.db import IntegrityError, Migration, SchemaError, Tx
from control.jobs import JobQueue
from control.pg import MIGRATIONS as PG_MIGRATIONS
from control.pg import PostgresDatabase, numbered
from control.sqlite import MIGRATIONS, SQLiteDatabase, split_statements
from control.videos import VideoJobHooks
from tests.control.pgserver import PostgresServer


async def test_open_migrates_and_uses_wal(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "sub" / "c.sqlite3")
    await db.open()
    try:
        assert (await db.fetchone("PRAGMA journal_mode"))[0] == "wal"
        rows = await db.fetchall("SELECT version, name FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in MIGRATIONS]
        tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
        assert {"videos", "jobs", "schema_version"} <= tables
    finally:
        await db.close()
    # reopening applies nothing twice
    db = SQLiteDatabase(tmp_path / "sub" / "c.sqlite3")
    await db.open()
    assert (await db.fetchone("SELECT count(*) FROM schema_version"))[0] == len(MIGRATIONS)
    await db.close()


async def test_new_migrations_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = SQLiteDatabase(path)
    await db.open()
    await db.close()

    async def backfill(tx: Tx) -> None:
        await tx.execute("INSERT INTO notes (body) VALUES ('from a function')")

    more = (*MIGRATIONS,
            Migration(len(MIGRATIONS) + 1, "notes", "CREATE TABLE notes (body TEXT);"
                      "INSERT INTO notes VALUES ('a; b');"),
            Migration(len(MIGRATIONS) + 2, "backfill", backfill))
    db = SQLiteDatabase(path, more)
    await db.open()
    assert [r[0] for r in await db.fetchall("SELECT body FROM notes")] == [
        "a; b", "from a function"]
    await db.close()

    # a database newer than the code is refused
    with pytest.raises(SchemaError):
        db = SQLiteDatabase(path)
        await db.open()


async def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken",
                                     "CREATE TABLE t (x); INSERT INTO nowhere VALUES (1);"))
    with pytest.raises(sqlite3.OperationalError):
        await SQLiteDatabase(tmp_path / "c.sqlite3", broken).open()
    db = SQLiteDatabase(tmp_path / "c.sqlite3")
    await db.open()
    tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
    assert "t" not in tables
    await db.close()


async def test_migrations_must_be_numbered(tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        await SQLiteDatabase(tmp_path / "c.sqlite3", [Migration(2, "gap", "SELECT 1")]).open()
    assert list(split_statements("SELECT 1; SELECT ';'; ")) == ["SELECT 1;", "SELECT ';';"]


async def test_transactions_are_alone_and_roll_back(tmp_path: Path) -> None:
    db = SQLiteDatabase(tmp_path / "c.sqlite3")
    await db.open()
    await db.execute("CREATE TABLE counter (n INTEGER)")
    await db.execute("INSERT INTO counter VALUES (0)")

    async def bump(tx: Tx) -> None:
        n = (await tx.fetchone("SELECT n FROM counter"))[0]
        await asyncio.sleep(0)  # another transaction would interleave here if it could
        await tx.execute("UPDATE counter SET n = ?", (n + 1,))

    await asyncio.gather(*(db.transaction(bump) for _ in range(20)))
    assert (await db.fetchone("SELECT n FROM counter"))[0] == 20

    async def boom(tx: Tx) -> None:
        await tx.execute("UPDATE counter SET n = 99")
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await db.transaction(boom)
    assert (await db.fetchone("SELECT n FROM counter"))[0] == 20
    # reads run on read-only connections, beside the writer
    with pytest.raises(sqlite3.OperationalError):
        await db.fetchall("DELETE FROM counter RETURNING n")
    await db.close()
    with pytest.raises(RuntimeError):
        await db.fetchone("SELECT 1")


def test_postgres_parameters() -> None:
    assert numbered("SELECT ? , '?', \"a?\", x::text, ?") == (
        "SELECT $1 , '?', \"a?\", x::text, $2", 2)
    assert numbered("UPDATE t SET a = :a WHERE b = :b AND c = :a AND d = '12:30'") == (
        "UPDATE t SET a = $1 WHERE b = $2 AND c = $1 AND d = '12:30'", ("a", "b"))


async def test_postgres_migrates_and_transactions_serialise(postgres: PostgresServer) -> None:
    url = await postgres.create_database()
    db = PostgresDatabase(url)
    await db.open()
    try:
        rows = await db.fetchall("SELECT version FROM schema_version ORDER BY version")
        assert [r[0] for r in rows] == [m.version for m in PG_MIGRATIONS]
        assert [m.version for m in PG_MIGRATIONS] == [m.version for m in MIGRATIONS]
        assert await db.migrate() == len(PG_MIGRATIONS)  # nothing applied twice
        await db.execute("CREATE TABLE counter (n INTEGER)")
        await db.execute("INSERT INTO counter VALUES (0)")

        async def bump(tx: Tx) -> None:
            n = (await tx.fetchone("SELECT n FROM counter"))[0]
            await asyncio.sleep(0.001)
            await tx.execute("UPDATE counter SET n = ?", (n + 1,))

        await asyncio.gather(*(db.transaction(bump) for _ in range(10)))  # retried on conflict
        assert (await db.fetchone("SELECT n FROM counter"))[0] == 10
        with pytest.raises(IntegrityError):
            await db.execute("INSERT INTO users (id, email, name, password_hash, created_at,"
                             " updated_at) VALUES ('a', 'x@y.z', 'n', 'h', 0, 0), "
                             "('b', 'x@y.z', 'n', 'h', 0, 0)")
    finally:
        await db.close()
        await postgres.drop_database(url)


async def test_postgres_workers_claim_each_job_once(postgres: PostgresServer) -> None:
    url = await postgres.create_database()
    db = PostgresDatabase(url)
    await db.open()
    try:
        queue = JobQueue(db, VideoJobHooks())
        for i in range(12):
            await db.execute("INSERT INTO videos (id, title, state, source_bytes, created_at,"
                             " updated_at) VALUES (?, 't', 'queued', 1, 0, 0)", (f"video{i:02}",))
            await queue.enqueue(f"video{i:02}")
        claims = await asyncio.gather(*(queue.claim(f"w{i}") for i in range(16)))
        claimed = [job.video_id for job in claims if job is not None]
        assert sorted(claimed) == [f"video{i:02}" for i in range(12)]  # each once, none lost
        states = await db.fetchall("SELECT DISTINCT state FROM videos")
        assert [r[0] for r in states] == ["processing"]
    finally:
        await db.close()
        await postgres.drop_database(url)
