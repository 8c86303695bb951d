"""`reel geo` refuses bad configuration at start-up: exit status 2, one readable line, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

GOOD = 'default = "eu-west"\n[regions.eu-west]\nlat = 51.5\nlon = 0\nedges = ["http://127.0.0.1:1"]\n'


def run_geo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reel", "geo", "--port", "1", *args],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("regions", "extra", "expected"), [
    ("default = [", (), "not valid TOML"),
    (None, (), "cannot read regions file"),
    (GOOD.replace('"eu-west"\n[', '"mars"\n['), (), "default: 'mars' is not a region"),
    (GOOD.replace("lat = 51.5\n", ""), (), "regions.eu-west.lat: missing"),
    (GOOD.replace("http://127.0.0.1:1", "ftp://files.example"), (), "is not an http(s) URL"),
    (GOOD.replace('["http://127.0.0.1:1"]', '["http://127.0.0.1:1", "http://127.0.0.1:1/"]'), (),
     "is listed twice"),
    (GOOD.replace('["http://127.0.0.1:1"]', '["http://127.0.0.1:1", "http://127.0.0.1:2"]')
     + '[regions."eu-west.2"]\nlat = 0\nlon = 0\nedges = ["http://127.0.0.1:3"]\n', (),
     "clash with the Pathway IDs"),
    (GOOD, ("--geoip-db", "JUNK"), "cannot open GeoIP2 database"),
    (GOOD, ("--geoip-db", "MISSING"), "cannot open GeoIP2 database"),
    (GOOD, ("--trusted-proxy", "example.com"), "trusted proxy 'example.com'"),
    (GOOD, ("--fall", "0"), "fall and rise must be at least 1"),
    (GOOD, ("--probe-interval", "0"), "probe interval and timeout must be positive"),
    (GOOD, ("--steering-ttl", "0"), "steering TTL must be at least 1 s"),
])
def test_bad_configuration_is_one_line_and_exit_2(tmp_path: Path, regions: str | None,
                                                  extra: tuple[str, ...], expected: str
                                                  ) -> None:
    path = tmp_path / "regions.toml"
    if regions is not None:
        path.write_text(regions)
    (tmp_path / "junk.mmdb").write_bytes(b"\x00not a maxmind database" * 10)
    extra = tuple({"JUNK": str(tmp_path / "junk.mmdb"), "MISSING": str(tmp_path / "no.mmdb")}
                  .get(arg, arg) for arg in extra)
    result = run_geo("--regions", str(path), *extra)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("reel geo: ") and expected in lines[0]
    assert "Traceback" not in result.stderr
