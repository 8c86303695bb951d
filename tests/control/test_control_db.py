"""The SQLite layer: WAL, migrations and schema_version, the single database thread."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from control.db import MIGRATIONS, Database, Migration, SchemaError, split_statements


async def test_open_migrates_and_uses_wal(tmp_path: Path) -> None:
    db = Database(tmp_path / "sub" / "c.sqlite3")
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
    db = Database(tmp_path / "sub" / "c.sqlite3")
    await db.open()
    assert (await db.fetchone("SELECT count(*) FROM schema_version"))[0] == len(MIGRATIONS)
    await db.close()


async def test_new_migrations_apply_in_order(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    db = Database(path)
    await db.open()
    await db.close()

    def backfill(conn: sqlite3.Connection) -> None:
        conn.execute("INSERT INTO notes (body) VALUES ('from a function')")

    more = (*MIGRATIONS,
            Migration(len(MIGRATIONS) + 1, "notes", "CREATE TABLE notes (body TEXT);"
                      "INSERT INTO notes VALUES ('a; b');"),
            Migration(len(MIGRATIONS) + 2, "backfill", backfill))
    db = Database(path, more)
    await db.open()
    assert [r[0] for r in await db.fetchall("SELECT body FROM notes")] == [
        "a; b", "from a function"]
    await db.close()

    # a database newer than the code is refused
    with pytest.raises(SchemaError):
        db = Database(path)
        await db.open()


async def test_failed_migration_rolls_back(tmp_path: Path) -> None:
    broken = (*MIGRATIONS, Migration(len(MIGRATIONS) + 1, "broken",
                                     "CREATE TABLE t (x); INSERT INTO nowhere VALUES (1);"))
    with pytest.raises(sqlite3.OperationalError):
        await Database(tmp_path / "c.sqlite3", broken).open()
    db = Database(tmp_path / "c.sqlite3")
    await db.open()
    tables = {r[0] for r in await db.fetchall("SELECT name FROM sqlite_master")}
    assert "t" not in tables
    await db.close()


def test_migrations_must_be_numbered() -> None:
    conn = sqlite3.connect(":memory:", isolation_level=None)
    from control.db import migrate

    with pytest.raises(SchemaError):
        migrate(conn, [Migration(2, "gap", "SELECT 1")])
    assert list(split_statements("SELECT 1; SELECT ';'; ")) == ["SELECT 1;", "SELECT ';';"]


async def test_one_thread_and_transactions(tmp_path: Path) -> None:
    db = Database(tmp_path / "c.sqlite3")
    await db.open()
    seen = await asyncio.gather(*(db.run(lambda conn: threading.get_ident()) for _ in range(20)))
    assert len(set(seen)) == 1 and seen[0] != threading.get_ident()

    await db.execute("CREATE TABLE counter (n INTEGER)")
    await db.execute("INSERT INTO counter VALUES (0)")

    def boom(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE counter SET n = 99")
        raise RuntimeError("abort")

    with pytest.raises(RuntimeError):
        await db.transaction(boom)
    assert (await db.fetchone("SELECT n FROM counter"))[0] == 0
    await db.close()
    with pytest.raises(RuntimeError):
        await db.fetchone("SELECT 1")
