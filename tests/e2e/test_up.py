"""`reel up`: Ctrl-C stops every process; a second run reuses the data directory; published
objects are world-readable; generated secrets are never read as options."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

from tests.e2e.conftest import UpProcess


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_ctrl_c_stops_everything_and_a_second_run_reuses_the_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ids = []
    for _ in range(2):
        up = UpProcess.start(data, "--demo", "--demo-seconds", "4")
        ids.append(up.wait_for(r"demo video (\S+) is ready").group(1))
        up.wait_for(r"Ctrl-C stops everything")
        ports = [up.port_base + offset for offset in (0, 1, 2, 3, 10, 11)]
        assert all(_listening(port) for port in ports)
        assert up.interrupt() == 0
        assert not any(_listening(port) for port in ports)
        assert not any("Traceback" in line for line in up.lines), "\n".join(up.lines)
    assert ids[0] != ids[1]
    # The first run's video is still there: same database, same objects.
    assert (data / "objects" / "vod" / ids[0] / "master.m3u8").exists()
    assert (data / "objects" / "vod" / ids[1] / "master.m3u8").exists()
    _assert_published_world_readable(data, ids[0])


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _assert_published_world_readable(data: Path, video_id: str) -> None:
    """What the worker published, another user (nginx, a backup job) can read; the upload and
    the store's staging stay private."""
    objects = data / "objects"
    tree = objects / "vod" / video_id
    files = [p for p in tree.rglob("*") if p.is_file()]
    assert len(files) > 10
    assert {p.relative_to(tree).as_posix(): _mode(p) for p in files} == {
        p.relative_to(tree).as_posix(): 0o644 for p in files}
    dirs = [objects, objects / "vod", tree, *(p for p in tree.rglob("*") if p.is_dir())]
    assert {str(p): _mode(p) for p in dirs} == {str(p): 0o755 for p in dirs}
    assert _mode(objects / "sources" / video_id / "source") == 0o600
    assert _mode(objects / "sources") == _mode(objects / ".tmp") == 0o700
    assert _mode(data / "control" / "uploads") == 0o700


# `reel up`, with every generated secret beginning with `-` (as one in 64 does).
DASHED = "-reel-dashed-secret"
DASHED_UP = ("-c", f"import secrets, sys; secrets.token_urlsafe = lambda n=None: {DASHED!r}; "
                   "from reel.cli import main; main(sys.argv[1:])")


def test_a_generated_secret_beginning_with_a_dash_is_never_read_as_an_option(tmp_path: Path) -> None:
    up = UpProcess.start(tmp_path / "data", python=DASHED_UP)
    try:
        up.wait_for(r"Ctrl-C stops everything")
        # Each edge got the secret itself as its purge token.
        for edge in (up.url(10), up.url(11)):
            request = urllib.request.Request(
                edge + "/purge", data=json.dumps({"paths": ["/vod/abcdef/master.m3u8"]}).encode(),
                headers={"Authorization": f"Bearer {DASHED}", "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
    finally:
        assert up.interrupt() == 0, "\n".join(up.lines)
