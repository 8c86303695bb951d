"""PostgreSQL for control, through asyncpg: the same `Database` interface as SQLite.

What differs from SQLite stays here: `?` and `:name` parameters become `$1, $2, ...`; command tags
become row counts; constraint violations become `control.db.IntegrityError`; transactions run
SERIALIZABLE and are retried when PostgreSQL reports a conflict, so a function given to
`transaction` sees the database as if it ran alone (as it does on SQLite). The schema is the same
tables as SQLite's, version for version; search uses a trigger-kept `tsvector` column (unaccented,
weighted title A, tags B, description C) under a GIN index instead of FTS5.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import asyncpg

from control.db import (
    Database,
    IntegrityError,
    Migration,
    Params,
    Row,
    Statements,
    Tx,
    UnstorableValue,
    check_params,
    live_tables,
    portable_steps,
)
from reel.logs import fields

log = logging.getLogger("reel.control.pg")
T = TypeVar("T")
RETRIES = 10


def _search_function(indexed: str) -> str:
    """The trigger function filling `videos.search` for public videos whose state is in `indexed`
    (an SQL list): step 4 indexed ready videos, step 6 live ones too."""
    return f"""
        CREATE OR REPLACE FUNCTION reel_video_search() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.state IN ({indexed}) AND NEW.privacy = 'public' THEN
                NEW.search := setweight(to_tsvector('simple', unaccent(NEW.title)), 'A')
                    || setweight(to_tsvector('simple', unaccent(NEW.tags)), 'B')
                    || setweight(to_tsvector('simple', unaccent(NEW.description)), 'C');
            ELSE
                NEW.search := NULL;
            END IF;
            RETURN NEW;
        END
        $$;
        """
_TOKEN = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|::|\?|(?<![:\w]):([A-Za-z_]\w*)")


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> tuple[str, tuple[str, ...] | int]:
    """`sql` with `?` / `:name` parameters as `$n`; the names in order, or how many `?` there were.

    String literals, quoted names and `::` casts are left alone.
    """
    names: list[str] = []
    count = 0

    def sub(match: re.Match[str]) -> str:
        nonlocal count
        token = match.group(0)
        if token == "?":
            count += 1
            return f"${count}"
        if (name := match.group(1)) is not None:
            if name not in names:
                names.append(name)
            return f"${names.index(name) + 1}"
        return token

    out = _TOKEN.sub(sub, sql)
    if names and count:
        raise ValueError("use either ? or :name parameters in one statement, not both")
    return out, tuple(names) if names else count


def _args(sql: str, params: Params) -> tuple[str, list[Any]]:
    check_params(params)
    text, spec = numbered(sql)
    if isinstance(spec, tuple):
        if not isinstance(params, Mapping):
            raise TypeError("named parameters need a mapping")
        return text, [params[name] for name in spec]
    if isinstance(params, Mapping) or len(params) != spec:
        raise TypeError(f"the statement takes {spec} parameters, got {len(params)}")
    return text, list(params)


def _rowcount(status: str) -> int:
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


async def _call(fn: Callable[[], Awaitable[T]]) -> T:
    try:
        return await fn()
    except asyncpg.IntegrityConstraintViolationError as exc:
        raise IntegrityError(str(exc)) from None
    except (asyncpg.CharacterNotInRepertoireError, asyncpg.UntranslatableCharacterError,
            asyncpg.NumericValueOutOfRangeError):
        raise UnstorableValue("a value cannot be stored") from None


class _Statements:
    """fetchone / fetchall / execute over an asyncpg connection or pool."""

    def __init__(self, target: asyncpg.Connection | asyncpg.Pool) -> None:
        self._target = target

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        text, args = _args(sql, params)
        return await _call(lambda: self._target.fetchrow(text, *args))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        text, args = _args(sql, params)
        return await _call(lambda: self._target.fetch(text, *args))

    async def execute(self, sql: str, params: Params = ()) -> int:
        text, args = _args(sql, params)
        return _rowcount(await _call(lambda: self._target.execute(text, *args)))


class _PgTx(_Statements, Tx):
    async def script(self, sql: str) -> None:
        await self._target.execute(sql)  # the simple protocol: several statements, no parameters


class PostgresDatabase(Database):
    """A pool of asyncpg connections to `url`."""

    dialect = "postgresql"

    def __init__(self, url: str, migrations: Sequence[Migration] | None = None, *,
                 min_size: int = 1, max_size: int = 10, command_timeout: float = 30,
                 replica: str | None = None) -> None:
        super().__init__(MIGRATIONS if migrations is None else migrations)
        self.url = url
        self.replica = None if replica is None else Replica(replica, self, max_size=max_size,
                                                            command_timeout=command_timeout)
        self._sizes = (min_size, max_size)
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._statements: _Statements | None = None

    def __repr__(self) -> str:
        return "PostgresDatabase(...)"  # the URL may hold a password

    async def open(self) -> None:
        if self._pool is not None:
            raise RuntimeError("database already open")
        self._pool = await asyncpg.create_pool(self.url, min_size=self._sizes[0],
                                               max_size=self._sizes[1],
                                               command_timeout=self._command_timeout)
        self._statements = _Statements(self._pool)
        try:
            await self.migrate()
            if self.replica is not None:
                await self.replica.open()
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        pool, self._pool, self._statements = self._pool, None, None
        if self.replica is not None:
            await self.replica.close()
        if pool is not None:
            await pool.close()

    @property
    def stale(self) -> Statements:
        return self if self.replica is None else self.replica

    def _direct(self) -> _Statements:
        if self._statements is None:
            raise RuntimeError("database is not open")
        return self._statements

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._direct().fetchone(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._direct().fetchall(sql, params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._direct().execute(sql, params)

    async def transaction(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._transaction(fn, "serializable")

    async def _migration_transaction(self, fn: Callable[[Tx], Awaitable[T]]) -> T:
        return await self._transaction(fn, "read_committed")  # DDL under an advisory lock

    async def lock_schema(self, tx: Tx) -> None:
        await tx.execute("SELECT pg_advisory_xact_lock(72650315)")

    async def _transaction(self, fn: Callable[[Tx], Awaitable[T]], isolation: str) -> T:
        if self._pool is None:
            raise RuntimeError("database is not open")
        for attempt in range(RETRIES):
            try:
                async with self._pool.acquire() as conn, conn.transaction(isolation=isolation):
                    return await fn(_PgTx(conn))
            except (asyncpg.SerializationError, asyncpg.DeadlockDetectedError):
                if attempt == RETRIES - 1:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * 2**attempt))
        raise AssertionError("unreachable")


class Replica(Statements):
    """Reads from a streaming replica (`PostgresDatabase.stale`); a replica that cannot be reached
    sends them to the primary instead, for `DOWN_SECONDS` before it is tried again.

    Why fall back rather than fail: what goes to the replica is what anonymous viewers read, and
    a primary that also answers those for a while is slower, while failing them is an outage.
    `reads` counts what each served (a test, an SRE: is the replica really used?).
    """

    DOWN_SECONDS = 5.0

    def __init__(self, url: str, primary: PostgresDatabase, *, max_size: int,
                 command_timeout: float) -> None:
        self.url, self.primary = url, primary
        self._max_size, self._command_timeout = max_size, command_timeout
        self._pool: asyncpg.Pool | None = None
        self._down_until = 0.0
        self.reads = {"replica": 0, "primary": 0}

    async def open(self) -> None:
        # No connection at start (min_size=0): a replica down now must not keep control down.
        self._pool = await asyncpg.create_pool(self.url, min_size=0, max_size=self._max_size,
                                               command_timeout=self._command_timeout, timeout=2)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def _read(self, fn: Callable[[_Statements], Awaitable[T]]) -> T:
        loop_time = asyncio.get_running_loop().time()
        if self._pool is not None and loop_time >= self._down_until:
            try:
                result = await fn(_Statements(self._pool))
                self.reads["replica"] += 1
                return result
            except (OSError, TimeoutError, asyncpg.InterfaceError,
                    asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                    asyncpg.exceptions.OperatorInterventionError) as exc:
                log.warning("read replica unreachable; reading the primary",
                            extra=fields(error=repr(exc), seconds=self.DOWN_SECONDS))
                self._down_until = loop_time + self.DOWN_SECONDS
        self.reads["primary"] += 1
        return await fn(self.primary._direct())

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        return await self._read(lambda s: s.fetchone(sql, params))

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._read(lambda s: s.fetchall(sql, params))

    async def execute(self, sql: str, params: Params = ()) -> int:
        raise TypeError("a read replica takes no writes: write to the primary")


MIGRATIONS: tuple[Migration, ...] = (
    *portable_steps(real="DOUBLE PRECISION", bigint="BIGINT"),
    Migration(
        4,
        "full-text search over public ready videos",
        # unaccent() is not IMMUTABLE, so it cannot sit in an index expression: a trigger keeps
        # `search` instead, NULL unless the video is public and ready (searching then needs no
        # visibility filter). reel_prefix_query builds 'w1' & 'w2' & 'w3':* from plain words,
        # unaccented one by one, so nothing a user types is ever tsquery syntax.
        """
        CREATE EXTENSION IF NOT EXISTS unaccent;
        ALTER TABLE videos ADD COLUMN search tsvector;
        """ + _search_function("'ready'") + """
        CREATE TRIGGER videos_search
            BEFORE INSERT OR UPDATE OF title, description, tags, state, privacy ON videos
            FOR EACH ROW EXECUTE FUNCTION reel_video_search();
        CREATE INDEX videos_search_gin ON videos USING gin (search);
        CREATE FUNCTION reel_prefix_query(words text[]) RETURNS tsquery
        LANGUAGE sql STABLE AS $$
            SELECT to_tsquery('simple', string_agg(
                       '''' || replace(unaccent(w), '''', '''''') || '''', ' & ' ORDER BY i)
                       || ':*')
            FROM unnest(words) WITH ORDINALITY AS t (w, i)
        $$;
        """,
    ),
    Migration(
        5,
        "preview playlist while processing",
        "ALTER TABLE videos ADD COLUMN preview TEXT;",
    ),
    Migration(
        6,
        "live streams: stream keys, publishers, viewers",
        """
        ALTER TABLE videos DROP CONSTRAINT videos_state_check;
        ALTER TABLE videos ADD CONSTRAINT videos_state_check CHECK
            (state IN ('queued', 'processing', 'ready', 'failed', 'waiting', 'live'));
        """ + live_tables(real="DOUBLE PRECISION", bigint="BIGINT") + """
        """ + _search_function("'ready', 'live'") + """
        """,
    ),
)
