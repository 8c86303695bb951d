"""`reel loadtest`: a thin wrapper that runs `locust -f loadtest/suites/SUITE.py --headless` (or
the catalog seeder). It runs loadtest/ as a program, never imports it: load tests speak HTTP only."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from reel.settings import Command, Flags

SUITES = ("steady", "celebrity", "step", "waves", "creators", "api", "apifloor", "live")
ROOT = Path(__file__).resolve().parents[1]


def add_flags(flags: Flags) -> None:
    flags.parser.add_argument("suite", choices=(*SUITES, "seed"),
                              help="suite to run, or `seed` to fill the catalog")
    flags.flag("--users", default=10, type=int, help="users (the base population of the shape)")
    flags.flag("--duration", default="60s", help="run time, e.g. 90s, 5m")
    flags.flag("--spawn-rate", default=None, type=float, help="users started per second")
    flags.flag("--port-base", default=8400, type=int,
               help="the stack's `reel up --port-base`: geo there, control +1")
    flags.flag("--host", default=None, help="geo URL (default: from --port-base)")
    flags.flag("--control", default=None, help="control URL (default: from --port-base)")
    flags.flag("--data", default="./reel-data", type=Path,
               help="`reel up` data directory: admin token and catalog file")
    flags.flag("--out", default="./loadtest-results", type=Path,
               help="directory for the CSVs and reports (SUITE_stats.csv, SUITE_report.html, ...)")
    flags.flag("--processes", default=0, type=int,
               help="Locust worker processes on this machine (0: one process; -1: one per CPU)")


def command_line(args: argparse.Namespace) -> list[str]:
    """The command `reel loadtest` runs."""
    geo = args.host or f"http://127.0.0.1:{args.port_base}"
    control = args.control or f"http://127.0.0.1:{args.port_base + 1}"
    if args.suite == "seed":
        return [sys.executable, "-m", "loadtest.seed", "--data", str(args.data), "--control", control,
                *args.extra]
    prefix = args.out / args.suite
    cmd = [sys.executable, "-m", "locust", "-f", str(ROOT / "loadtest" / "suites" / f"{args.suite}.py"),
           "--headless", "--users", str(args.users), "--run-time", args.duration, "--host", geo,
           "--control", control, "--catalog", str(args.data / "loadtest-catalog.json"),
           "--csv", str(prefix), "--html", f"{prefix}_locust.html"]
    # Locust's own default is 1 user/s, which would stretch a shape's ramp over minutes: by
    # default every user comes within 5 s (or a tenth of a shorter run), as loadtest/shapes says.
    rate = args.spawn_rate or max(1.0, args.users / min(5.0, seconds(args.duration) / 10))
    cmd += ["--spawn-rate", f"{rate:g}"]
    if args.processes:
        cmd += ["--processes", str(args.processes)]
    return cmd + list(args.extra)


def seconds(timespan: str) -> float:
    """Locust's run time (`90`, `90s`, `5m`, `1h30m`) in seconds."""
    parts = re.fullmatch(r"\s*(?:(\d+)h)?\s*(?:(\d+)m)?\s*(?:(\d+)s?)?\s*", timespan)
    if not parts or not any(parts.groups()):
        raise SystemExit(f"reel loadtest: --duration {timespan!r} is not like 90s, 5m or 1h30m")
    h, m, s = (int(g or 0) for g in parts.groups())
    return float(h * 3600 + m * 60 + s)


def run(args: argparse.Namespace) -> int:
    cmd = command_line(args)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)}
    print("+", " ".join(cmd), file=sys.stderr, flush=True)
    os.execve(sys.executable, cmd, env)


LOADTEST = Command(
    "loadtest", "Locust suites against a running stack (a thin wrapper over `locust`)", add_flags, run,
    description="Runs `locust -f loadtest/suites/SUITE.py --headless` with these options; any "
                "other option goes to locust as it is (see `locust --help`, and the reel group "
                "there). `reel loadtest seed --videos N` fills the stack's catalog first.",
    passthrough=True)
