"""A throwaway PostgreSQL server for the tests: initdb in a temporary directory, pg_ctl start on a
free loopback port (its unix socket in that directory too), databases copied from a migrated
template (one shared by the app tests, emptied before each), everything removed at the end. As
root, the server runs as an unprivileged user (`postgres` when it exists, else `nobody`)."""

from __future__ import annotations

import asyncio
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path

import asyncpg

from control.pg import PostgresDatabase

SUPERUSER = "reel"


def pg_binary(name: str) -> str | None:
    """`name` on PATH, else under Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    """`start()`, then `create_database()` per test; `stop()` removes it all."""

    def __init__(self) -> None:
        initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
        if initdb is None or pg_ctl is None:
            raise RuntimeError("PostgreSQL is not installed (initdb, pg_ctl): "
                               "apt-get install postgresql")
        self.initdb, self.pg_ctl = initdb, pg_ctl
        self.root = Path(tempfile.mkdtemp(prefix="reel-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self._user: str | None = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self._user = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(self._user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.template = "reel_template"
        self.shared = ""

    def _run(self, *args: str) -> None:
        cmd = list(args)
        if self._user is not None:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if proc.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(f"{' '.join(args[:2])} failed: {proc.stderr or proc.stdout}\n"
                               f"{log.read_text() if log.exists() else ''}")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _start_server(self) -> None:
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200 "
                   "-c wal_level=replica -c max_wal_senders=10")
        self._run(self.pg_ctl, "-D", str(self.data), "-l", str(self.root / "server.log"),
                  "-o", options, "-w", "-t", "60", "start")

    async def start(self) -> None:
        self._run(self.initdb, "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                  "--encoding=UTF8", "--locale=C", "--no-sync")
        self._start_server()
        await self._admin(f"CREATE DATABASE {self.template}")
        db = PostgresDatabase(self.url(self.template), min_size=1, max_size=1)
        await db.open()  # the template carries every migration: each test's copy starts migrated
        await db.close()
        self.shared = await self.create_database()

    async def empty_shared(self) -> str:
        """The shared database emptied (every row of every table but schema_version): cheaper
        than a new database per test, and as fresh. Returns its URL."""
        conn = await asyncpg.connect(self.shared)
        try:
            tables = [r[0] for r in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                " AND tablename <> 'schema_version'")]
            await conn.execute("; ".join(f'DELETE FROM "{t}"' for t in tables))
        finally:
            await conn.close()
        return self.shared

    async def _admin(self, sql: str) -> None:
        conn = await asyncpg.connect(self.url())
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    async def create_database(self) -> str:
        """A fresh migrated database; returns its URL."""
        name = "t_" + uuid.uuid4().hex[:16]
        await self._admin(f"CREATE DATABASE {name} TEMPLATE {self.template}")
        return self.url(name)

    async def drop_database(self, url: str) -> None:
        await self._admin(f"DROP DATABASE IF EXISTS {url.rsplit('/', 1)[1]} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


class StandbyServer(PostgresServer):
    """A streaming replica of `primary`: pg_basebackup -R (it then follows the primary's WAL),
    started hot (read-only queries). `pause()`/`resume()` its replay to make it visibly stale."""

    def __init__(self, primary: PostgresServer) -> None:
        super().__init__()
        self.primary = primary
        basebackup = pg_binary("pg_basebackup")
        if basebackup is None:
            raise RuntimeError("PostgreSQL's pg_basebackup is not installed")
        self.basebackup = basebackup

    async def start(self) -> None:
        self._run(self.basebackup, "-h", "127.0.0.1", "-p", str(self.primary.port), "-U", SUPERUSER,
                  "-D", str(self.data), "-R", "-X", "stream", "--no-sync", "--checkpoint=fast")
        self._start_server()
        async with asyncio.timeout(60):  # until it accepts read-only connections
            while True:
                try:
                    conn = await asyncpg.connect(self.url())
                except (OSError, asyncpg.CannotConnectNowError):
                    await asyncio.sleep(0.2)
                    continue
                await conn.close()
                return

    async def _standby(self, sql: str) -> object:
        conn = await asyncpg.connect(self.url())
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    async def caught_up(self) -> None:
        """Wait until everything the primary has written is replayed here."""
        conn = await asyncpg.connect(self.primary.url())
        try:
            # The insert position: with synchronous_commit off a commit may not be written yet.
            target = await conn.fetchval("SELECT pg_current_wal_insert_lsn()::text")
        finally:
            await conn.close()
        async with asyncio.timeout(30):
            while True:
                if await self._standby(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn"):
                    return
                await asyncio.sleep(0.05)

    async def pause(self) -> None:
        """Stop replaying, and wait until it has (a pause is only requested at first)."""
        await self._standby("SELECT pg_wal_replay_pause()")
        async with asyncio.timeout(30):
            while True:
                if await self._standby("SELECT pg_get_wal_replay_pause_state()") == "paused":
                    return
                await asyncio.sleep(0.02)

    async def resume(self) -> None:
        await self._standby("SELECT pg_wal_replay_resume()")

    def halt(self) -> None:
        """Stop the server, as a crash would (its files stay until `stop()`)."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def url_of(self, primary_url: str) -> str:
        """The replica's URL of the database `primary_url` names."""
        return self.url(primary_url.rsplit("/", 1)[1])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
