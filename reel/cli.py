"""The `reel` command line: one subcommand per service (see DESIGN.md, "The command line").

Each service wires its own subcommand (`edge/cli.py`, `origin/cli.py`, ...: a `reel.settings.Command`);
this module only collects them, so adding a flag to a service touches that service alone.
Every flag also reads an environment variable, REEL_<COMMAND>_<FLAG> (for example
`reel edge --cache-mb` reads REEL_EDGE_CACHE_MB); the flag wins over the variable.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from control.cli import CONTROL
from edge.cli import EDGE
from geo.cli import GEO
from origin.base import StoreError
from origin.cli import ORIGIN
from packager.cli import INGEST, PACKAGE, WORKER
from reel import logs
from reel.loadtest import LOADTEST
from reel.service import stop_with_parent
from reel.settings import Flags
from reel.up import UP

COMMANDS = {command.name: command for command in (UP, PACKAGE, ORIGIN, EDGE, GEO, CONTROL, WORKER,
                                                  INGEST, LOADTEST)}


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="reel", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("REEL_LOG_LEVEL", "INFO"),
                        help="log level [env REEL_LOG_LEVEL]")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS.values():
        command.add_flags(Flags(sub.add_parser(command.name, help=command.help,
                                               description=command.description), command.name))
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args, extra = parser().parse_known_args(argv)
    command = COMMANDS[args.command]
    if extra and not command.passthrough:
        parser().error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    logs.setup(args.command, args.log_level)
    stop_with_parent()
    try:
        sys.exit(command.run(args))
    except StoreError as exc:
        print(f"reel {args.command}: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
