"""The `reel` command line as an SRE meets it: one subcommand per service, each flag documented
with its REEL_<COMMAND>_<FLAG> variable, which sets its default."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

COMMANDS = ["up", "package", "origin", "edge", "geo", "control", "worker", "ingest", "loadtest"]


def reel(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reel", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "1000", **env}, timeout=60)


def test_every_command_is_listed() -> None:
    shown = reel("--help")
    assert shown.returncode == 0
    assert re.findall(r"^    ([a-z]+) ", shown.stdout, re.MULTILINE) == COMMANDS


@pytest.mark.parametrize("command", COMMANDS)
def test_every_flag_names_its_variable(command: str) -> None:
    shown = reel(command, "--help")
    assert shown.returncode == 0
    flags = re.findall(r"^  --([a-z-]+)", shown.stdout, re.MULTILINE)
    assert len(flags) >= 3
    assert re.findall(r"\[env (\w+)\]", shown.stdout) == [
        f"REEL_{command.upper()}_{flag.replace('-', '_').upper()}" for flag in flags]


def test_a_variable_sets_the_default_and_the_flag_wins() -> None:
    shown = reel("edge", "--help", REEL_EDGE_CACHE_MB="12", REEL_EDGE_ORIGIN="http://a, http://b")
    assert "[env REEL_EDGE_CACHE_MB] (default: 12)" in shown.stdout
    assert "[env REEL_EDGE_ORIGIN] (default: ['http://a', 'http://b'])" in shown.stdout
    # A required flag given by its variable is no longer required; a wrong value is refused.
    refused = reel("geo", "--port", "1", "--probe-interval", "x", REEL_GEO_REGIONS="/nonexistent")
    assert refused.returncode == 2
    assert "--probe-interval: invalid float value: 'x'" in refused.stderr
    assert "required" not in refused.stderr


def test_unknown_options_are_refused_except_by_loadtest() -> None:
    refused = reel("origin", "--store", "/tmp/x", "--no-such-flag")
    assert refused.returncode == 2
    assert "unrecognized arguments: --no-such-flag" in refused.stderr


def test_ingest_needs_control_or_a_static_key(tmp_path) -> None:
    refused = reel("ingest", f"--store={tmp_path}")
    assert refused.returncode == 2 and "--static-key" in refused.stderr
    shown = reel("ingest", "--help", REEL_INGEST_RTMP_PORT="19999")
    assert "[env REEL_INGEST_RTMP_PORT] (default: 19999)" in shown.stdout
