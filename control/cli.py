"""`reel control`: the creators' and viewers' API. The app is loaded when the command runs."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from origin.store import STORE_HELP
from reel.playback_token import KEYS_HELP
from reel.settings import Command, Flags

if TYPE_CHECKING:
    from aiohttp import web


def add_flags(flags: Flags) -> None:
    flags.flag("--data", default=None, type=Path,
               help="data directory (SQLite database unless --db, upload staging)")
    flags.flag("--db", default=None,
               help="PostgreSQL URL (postgresql://user:password@host:5432/dbname) instead of SQLite")
    flags.flag("--db-replica", default=None,
               help="PostgreSQL streaming replica URL: anonymous reads (videos, lists, search, "
                    "trending, comments) go there; signed-in reads and all writes to --db")
    flags.flag("--store", required=True, help=STORE_HELP)
    flags.flag("--workers", default=0, type=int,
               help="worker processes on the port (SO_REUSEPORT); 0: one per core. Each is a whole "
                    "control; views are merged in the shared database, sweeps run in one")
    flags.flag("--view-flush-seconds", default=0.5, type=float,
               help="how often accepted views are merged into the database (a crash loses at "
                    "most this much of them)")
    flags.flag("--host", default="127.0.0.1", help="listen address")
    flags.flag("--port", default=8300, type=int, help="listen port")
    flags.flag("--geo-url", default="http://127.0.0.1:8000", help="public URL of geo")
    flags.flag("--worker-token", required=True, help="shared secret workers present")
    flags.flag("--max-upload-mb", default=2048, type=int, help="largest accepted upload")
    flags.flag("--quota-mb", default=50 * 1024, type=int,
               help="default per-user storage quota (sources)")
    flags.flag("--admin-email", nargs="*", default=[], help="emails of admin accounts")
    flags.flag("--edge", nargs="*", default=[], help="edge URLs to purge when a video is deleted")
    flags.flag("--purge-token", default="", help="bearer token the edges' POST /purge expects")
    flags.flag("--ingest-rtmp", default="",
               help="public RTMP URL of ingest, up to the app: rtmp://HOST:PORT/live (the stream "
                    "key is appended); empty: not told to creators")
    flags.flag("--ingest-srt", default="",
               help="public SRT URL of ingest: srt://HOST:PORT (?streamid=publish:KEY is appended)")
    flags.flag("--live-grace-seconds", default=30.0, type=float,
               help="how long a live stream's publisher may be gone before the stream ends")
    flags.flag("--playback-keys", default=None,
               help=KEYS_HELP + "; signs private and unlisted videos' URLs")
    flags.flag("--token-hours", default=4.0, type=float,
               help="how long a private or unlisted video's playback URL stays valid")
    flags.flag("--rate-ip", default="50:400",
               help="requests per second:burst per client address (0: no limit)")
    flags.flag("--rate-user", default="20:200",
               help="requests per second:burst per signed-in user (0: no limit)")
    flags.flag("--rate-auth", default="0.2:20",
               help="sign-ups and sign-ins per second:burst per client address (0: no limit)")
    flags.flag("--edge-secret", default="",
               help="shared secret edges send (their --control-secret): only then is their "
                    "X-Forwarded-For believed as the client's address (empty: never)")
    flags.flag("--api-max-age", default=2, type=int,
               help="seconds edges may serve an anonymous public read (a video, comments, search...)")


def run(args: argparse.Namespace) -> int:
    from control.app import make_app
    from control.live import LiveSettings
    from control.ratelimit import Rate, RateLimits
    from origin.store import open_store
    from reel.playback_token import load_ring
    from reel.service import serve
    from reel.workers import cpu_count, supervise

    if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
        raise SystemExit("reel control: --db must be a postgresql:// URL")
    if args.db_replica is not None and (
            args.db is None or not args.db_replica.startswith(("postgresql://", "postgres://"))):
        raise SystemExit("reel control: --db-replica needs --db, and must be a postgresql:// URL")
    if not 0 < args.view_flush_seconds <= 60:
        raise SystemExit("reel control: --view-flush-seconds must be in (0, 60]")
    if args.data is None and args.db is None:
        raise SystemExit("reel control: give --data DIR (SQLite) or --db postgresql://...")
    data = args.data if args.data is not None else Path("reel-control-data")  # tus staging
    try:
        limits = RateLimits(per_ip=Rate.parse(args.rate_ip), per_user=Rate.parse(args.rate_user),
                            auth_per_ip=Rate.parse(args.rate_auth))
        live = LiveSettings(rtmp_url=args.ingest_rtmp, srt_url=args.ingest_srt,
                            grace_seconds=args.live_grace_seconds)
    except ValueError as exc:
        raise SystemExit(f"reel control: {exc}") from None
    keys = load_ring(args.playback_keys)

    def build(**worker: Any) -> web.Application:
        return make_app(data, open_store(args.store), geo_url=args.geo_url, database=args.db,
                        database_replica=args.db_replica,
                        rate_limits=limits, worker_token=args.worker_token,
                        max_upload_bytes=args.max_upload_mb * 1024 * 1024,
                        quota_bytes=args.quota_mb * 1024 * 1024, admin_emails=args.admin_email,
                        edges=args.edge, purge_token=args.purge_token, live=live,
                        playback_keys=keys, token_seconds=args.token_hours * 3600,
                        view_flush_seconds=args.view_flush_seconds,
                        edge_secret=args.edge_secret, api_max_age=args.api_max_age, **worker)

    workers = args.workers or cpu_count()
    if workers <= 1:
        serve(build(), args.host, args.port)
        return 0

    def one(index: int, urls: tuple[str, ...], private: socket.socket) -> None:
        serve(build(worker=index, workers=urls), args.host, args.port, reuse_port=True,
              sockets=(private,))

    return supervise(one, workers, "reel control")


CONTROL = Command("control", "creators' and viewers' API", add_flags, run)
