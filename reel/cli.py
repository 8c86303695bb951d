"""The `reel` command line: one subcommand per service (see DESIGN.md, "The command line").

Every flag also reads an environment variable, REEL_<COMMAND>_<FLAG> (for example
`reel edge --cache-mb` reads REEL_EDGE_CACHE_MB); the flag wins over the variable.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from reel import logs

STORE_HELP = ("object store: a directory, or s3://BUCKET/PREFIX for S3 or any S3-compatible server "
              "(?endpoint=URL&addressing=path|virtual|auto&region=R; without endpoint, "
              "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL; credentials and region from the standard "
              "AWS variables and config files)")


class _Command:
    """Adds flags to one subcommand, wiring each to its REEL_<COMMAND>_<FLAG> variable."""

    def __init__(self, parser: argparse.ArgumentParser, command: str) -> None:
        self.parser = parser
        self.prefix = f"REEL_{command.upper()}_"

    def flag(self, name: str, *, default: object = None, type: Callable = str, **kw) -> None:
        env = self.prefix + name.lstrip("-").replace("-", "_").upper()
        value = os.environ.get(env)
        if value is not None:
            if kw.get("nargs") in ("+", "*"):
                default = [type(v) for v in value.replace(",", " ").split()]
            elif kw.get("action") == "store_true":
                default = value.lower() in ("1", "true", "yes", "on")
            else:
                default = type(value)
        if kw.get("required") and default is not None:
            kw["required"] = False
        help_text = kw.pop("help", "")
        help_text = f"{help_text} [env {env}]" + ("" if default is None else " (default: %(default)s)")
        if kw.get("action") == "store_true":
            self.parser.add_argument(name, default=bool(default), help=help_text, **kw)
        else:
            self.parser.add_argument(name, default=default, type=type, help=help_text, **kw)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reel", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("REEL_LOG_LEVEL", "INFO"),
                        help="log level [env REEL_LOG_LEVEL]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = _Command(sub.add_parser("up", help="everything on one machine, embedded defaults"), "up")
    up.flag("--data", default="./reel-data", type=Path, help="data directory (database, objects)")
    up.flag("--store", default=None, help=STORE_HELP.replace("a directory", "DATA/objects (default)", 1))
    up.flag("--demo", action="store_true", help="make a test clip, upload it and print its URLs")
    up.flag("--demo-seconds", default=20.0, type=float, help="length of the demo clip")
    up.flag("--host", default="127.0.0.1", help="address every service listens on")
    up.flag("--port-base", default=8400, type=int,
            help="geo listens here, control +1, origins +2, +3, edges +10, +11 (one of each per region)")

    package = _Command(sub.add_parser("package", help="offline packager: INPUT -> OUTDIR"), "package")
    package.parser.add_argument("input", type=Path, help="any file FFmpeg can decode")
    package.parser.add_argument("outdir", type=Path, help="receives master.m3u8 and renditions")
    package.flag("--segment-seconds", default=6.0, type=float, help="target segment duration")
    package.flag("--preset", default="veryfast", help="x264 preset")
    package.flag("--max-seconds", default=4 * 3600.0, type=float, help="longest accepted input")
    package.flag("--max-height", default=2160, type=int, help="tallest accepted input")
    package.flag("--workers", default=1, type=int,
                 help="processes: inputs longer than two chunks are encoded in parallel chunks")
    package.flag("--chunk-seconds", default=60.0, type=float, help="chunk length with --workers")

    origin = _Command(sub.add_parser("origin", help="serve a store by the object layout"), "origin")
    origin.flag("--store", required=True, help=STORE_HELP)
    origin.flag("--host", default="127.0.0.1", help="listen address")
    origin.flag("--port", default=8100, type=int, help="listen port")
    origin.flag("--region", default=None, help="region this origin is in")

    edge = _Command(sub.add_parser("edge", help="caching edge for one region"), "edge")
    edge.flag("--region", required=True, help="region this edge serves")
    edge.flag("--origin", default=[], nargs="+", help="origin URLs, nearest first")
    edge.flag("--regions", default=None, type=Path,
              help="regions file: take the origins from it, nearest to --region first")
    edge.flag("--host", default="127.0.0.1", help="listen address")
    edge.flag("--port", default=8200, type=int, help="listen port")
    edge.flag("--cache-mb", default=256, type=int, help="cache size in MiB (per worker)")
    edge.flag("--shield", default=None, help="regional shield edge URL (the origins stay as fallback)")
    edge.flag("--purge-token", default=None, help="bearer token POST /purge requires (none: purge is off)")
    edge.flag("--workers", default=0, type=int,
              help="processes sharing the port (SO_REUSEPORT), each with its own cache; 0: one per CPU")
    edge.flag("--prefetch", default=3, type=int, help="media segments fetched ahead of a viewer (0: off)")
    edge.flag("--stale-while-revalidate", default=2.0, type=float,
              help="seconds an expired object is served while it is refreshed, when the origin says nothing")
    edge.flag("--stale-if-error", default=86400.0, type=float,
              help="seconds an expired object stands in for a failing origin, when the origin says nothing")
    edge.flag("--access-log", action="store_true", help="log one JSON line per request")

    geo = _Command(sub.add_parser("geo", help="send players to their nearest healthy edge"), "geo")
    geo.flag("--regions", required=True, type=Path, help="regions file (TOML)")
    geo.flag("--host", default="127.0.0.1", help="listen address")
    geo.flag("--port", default=8000, type=int, help="listen port")
    geo.flag("--geoip-db", default=None, type=Path, help="GeoIP2 City .mmdb")
    geo.flag("--trusted-proxy", default=[], nargs="*",
             help="addresses or networks whose X-Forwarded-For is believed")
    geo.flag("--probe-interval", default=2.0, type=float, help="seconds between health probes of an edge")
    geo.flag("--probe-timeout", default=1.0, type=float, help="seconds a health probe may take")
    geo.flag("--fall", default=2, type=int, help="failed probes in a row that take an edge out")
    geo.flag("--rise", default=2, type=int, help="good probes in a row that bring an edge back")
    geo.flag("--steering-ttl", default=10, type=int,
             help="seconds HLS players keep a steering manifest before asking again")

    control = _Command(sub.add_parser("control", help="creators' and viewers' API"), "control")
    control.flag("--data", default=None, type=Path,
                 help="data directory (SQLite database unless --db, upload staging)")
    control.flag("--db", default=None,
                 help="PostgreSQL URL (postgresql://user:password@host:5432/dbname) instead of SQLite")
    control.flag("--store", required=True, help=STORE_HELP)
    control.flag("--host", default="127.0.0.1", help="listen address")
    control.flag("--port", default=8300, type=int, help="listen port")
    control.flag("--geo-url", default="http://127.0.0.1:8000", help="public URL of geo")
    control.flag("--worker-token", required=True, help="shared secret workers present")
    control.flag("--max-upload-mb", default=2048, type=int, help="largest accepted upload")
    control.flag("--quota-mb", default=50 * 1024, type=int,
                 help="default per-user storage quota (sources)")
    control.flag("--admin-email", nargs="*", default=[], help="emails of admin accounts")
    control.flag("--edge", nargs="*", default=[], help="edge URLs to purge when a video is deleted")
    control.flag("--purge-token", default="", help="bearer token the edges' POST /purge expects")
    control.flag("--rate-ip", default="50:400",
                 help="requests per second:burst per client address (0: no limit)")
    control.flag("--rate-user", default="20:200",
                 help="requests per second:burst per signed-in user (0: no limit)")
    control.flag("--rate-auth", default="0.2:20",
                 help="sign-ups and sign-ins per second:burst per client address (0: no limit)")

    worker = _Command(sub.add_parser("worker", help="claim and run packaging jobs"), "worker")
    worker.flag("--control", required=True, help="control URL")
    worker.flag("--store", required=True, help=STORE_HELP)
    worker.flag("--token", required=True, help="worker token control expects")
    worker.flag("--job-timeout", default=3600.0, type=float, help="seconds before a job is killed")
    worker.flag("--processes", default=1, type=int,
                help="encoding processes per job: long videos are cut into chunks encoded in parallel")

    loadtest = _Command(sub.add_parser(
        "loadtest", help="Locust suites against a running stack (a thin wrapper over `locust`)",
        description="Runs `locust -f loadtest/suites/SUITE.py --headless` with these options; any "
                    "other option goes to locust as it is (see `locust --help`, and the reel group "
                    "there). `reel loadtest seed --videos N` fills the stack's catalog first."),
        "loadtest")
    loadtest.parser.add_argument("suite", choices=(*LOADTEST_SUITES, "seed"),
                                 help="suite to run, or `seed` to fill the catalog")
    loadtest.flag("--users", default=10, type=int, help="users (the base population of the shape)")
    loadtest.flag("--duration", default="60s", help="run time, e.g. 90s, 5m")
    loadtest.flag("--spawn-rate", default=None, type=float, help="users started per second")
    loadtest.flag("--port-base", default=8400, type=int,
                  help="the stack's `reel up --port-base`: geo there, control +1")
    loadtest.flag("--host", default=None, help="geo URL (default: from --port-base)")
    loadtest.flag("--control", default=None, help="control URL (default: from --port-base)")
    loadtest.flag("--data", default="./reel-data", type=Path,
                  help="`reel up` data directory: admin token and catalog file")
    loadtest.flag("--out", default="./loadtest-results", type=Path,
                  help="directory for the CSVs and reports (SUITE_stats.csv, SUITE_report.html, ...)")
    loadtest.flag("--processes", default=0, type=int,
                  help="Locust worker processes on this machine (0: one process; -1: one per CPU)")
    return parser


LOADTEST_SUITES = ("steady", "celebrity", "step", "waves", "creators", "api")


def loadtest_command(args: argparse.Namespace, extra: Sequence[str]) -> list[str]:
    """The command `reel loadtest` runs."""
    root = Path(__file__).resolve().parents[1]
    geo = args.host or f"http://127.0.0.1:{args.port_base}"
    control = args.control or f"http://127.0.0.1:{args.port_base + 1}"
    if args.suite == "seed":
        return [sys.executable, "-m", "loadtest.seed", "--data", str(args.data), "--control", control,
                *extra]
    prefix = args.out / args.suite
    cmd = [sys.executable, "-m", "locust", "-f", str(root / "loadtest" / "suites" / f"{args.suite}.py"),
           "--headless", "--users", str(args.users), "--run-time", args.duration, "--host", geo,
           "--control", control, "--catalog", str(args.data / "loadtest-catalog.json"),
           "--csv", str(prefix), "--html", f"{prefix}_locust.html"]
    if args.spawn_rate:
        cmd += ["--spawn-rate", f"{args.spawn_rate:g}"]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    return cmd + list(extra)


def stop_with_parent() -> None:
    """A service `reel up` started gets SIGTERM when `reel up` dies, even by SIGKILL, so a killed
    stack never leaves its services running (Linux: PR_SET_PDEATHSIG; the signal comes when the
    thread that started us ends, which for `reel up` is its main thread)."""
    from reel.up import PARENT_ENV

    parent = os.environ.pop(PARENT_ENV, None)
    if parent is None or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != int(parent):  # it died before the call above took effect
        os.kill(os.getpid(), signal.SIGTERM)


def main(argv: Sequence[str] | None = None) -> None:
    args, extra = _parser().parse_known_args(argv)
    if extra and args.command != "loadtest":
        _parser().error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command == "loadtest":
        cmd = loadtest_command(args, extra)
        root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        os.execve(sys.executable, cmd, env)
    logs.setup(args.command, args.log_level)
    stop_with_parent()
    from origin.store import StoreError

    try:
        sys.exit(_run(args))
    except StoreError as exc:
        print(f"reel {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


def _run(args: argparse.Namespace) -> int:
    if args.command == "up":
        from reel.up import run_up

        return run_up(args.data, args.host, args.port_base, demo=args.demo,
                      demo_seconds=args.demo_seconds, store=args.store)

    if args.command == "package":
        from packager import Limits, PackagingError, package

        try:
            result = package(args.input, args.outdir, segment_seconds=args.segment_seconds,
                             preset=args.preset,
                             limits=Limits(max_seconds=args.max_seconds, max_height=args.max_height),
                             workers=args.workers, chunk_seconds=args.chunk_seconds)
        except PackagingError as exc:
            print(f"reel package: {exc.reason}: {exc}", file=sys.stderr)
            return 2
        print(result.master)
        return 0

    from reel.service import run_until_signal, serve

    if args.command == "origin":
        import origin

        serve(origin.make_app(origin.open_store(args.store), region=args.region),
              args.host, args.port)
    elif args.command == "edge":
        import edge
        from edge import workers

        try:
            origins = edge.origins_nearest(args.regions, args.region) if args.regions else args.origin
        except edge.ConfigError as exc:
            print(f"reel edge: {exc}", file=sys.stderr)
            return 2
        if not origins:
            print("reel edge: give --origin URL... or --regions FILE", file=sys.stderr)
            return 2

        def build(**cluster: object):
            return edge.make_app(region=args.region, origins=origins,
                                 cache_bytes=args.cache_mb * 1024 * 1024, shield=args.shield,
                                 purge_token=args.purge_token, prefetch_segments=args.prefetch,
                                 stale_while_revalidate=args.stale_while_revalidate,
                                 stale_if_error=args.stale_if_error, **cluster)

        return workers.run(build, args.host, args.port, args.workers or workers.cpu_count(),
                           access_log=args.access_log)
    elif args.command == "geo":
        import geo

        try:
            app = geo.make_app(args.regions, geoip_db=args.geoip_db,
                               trusted_proxies=args.trusted_proxy,
                               probe_interval=args.probe_interval, probe_timeout=args.probe_timeout,
                               fall=args.fall, rise=args.rise, steering_ttl=args.steering_ttl)
        except geo.ConfigError as exc:
            print(f"reel geo: {exc}", file=sys.stderr)
            return 2
        serve(app, args.host, args.port)
    elif args.command == "control":
        import control
        import origin
        from control.ratelimit import Rate, RateLimits

        if args.db is not None and not args.db.startswith(("postgresql://", "postgres://")):
            raise SystemExit("reel control: --db must be a postgresql:// URL")
        if args.data is None and args.db is None:
            raise SystemExit("reel control: give --data DIR (SQLite) or --db postgresql://...")
        data = args.data if args.data is not None else Path("reel-control-data")  # tus staging
        try:
            limits = RateLimits(per_ip=Rate.parse(args.rate_ip), per_user=Rate.parse(args.rate_user),
                                auth_per_ip=Rate.parse(args.rate_auth))
        except ValueError as exc:
            raise SystemExit(f"reel control: {exc}") from None
        serve(control.make_app(data, origin.open_store(args.store), geo_url=args.geo_url,
                               database=args.db, rate_limits=limits,
                               worker_token=args.worker_token,
                               max_upload_bytes=args.max_upload_mb * 1024 * 1024,
                               quota_bytes=args.quota_mb * 1024 * 1024,
                               admin_emails=args.admin_email, edges=args.edge,
                               purge_token=args.purge_token),
              args.host, args.port)
    elif args.command == "worker":
        import origin
        from packager.worker import run_worker

        origin.open_store(args.store)  # a bad store spec fails here, before any job is claimed
        run_until_signal(lambda stop: run_worker(args.control, args.store, args.token, stop,
                                                 job_timeout=args.job_timeout, processes=args.processes))
    return 0


if __name__ == "__main__":
    main()
