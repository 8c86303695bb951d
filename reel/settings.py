"""Settings from the command line and the environment: how each service declares its `reel`
subcommand.

A service's `cli` module (`edge/cli.py`, `origin/cli.py`, ...) makes a `Command`: its name, a
function adding its flags and one running it. `reel.cli` only collects them. Every flag also
reads an environment variable, REEL_<COMMAND>_<FLAG> (`reel edge --cache-mb` reads
REEL_EDGE_CACHE_MB); the flag wins over the variable.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from dataclasses import dataclass


class Flags:
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


@dataclass(frozen=True)
class Command:
    """One `reel` subcommand, as the service that owns it wires it.

    `run` gets the parsed arguments and returns the exit status. With `passthrough`, options the
    parser does not know are left in `args.extra` for the program the command runs (`reel
    loadtest` hands them to locust); otherwise they are an error."""

    name: str
    help: str
    add_flags: Callable[[Flags], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    passthrough: bool = False
