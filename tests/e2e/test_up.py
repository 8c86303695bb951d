"""`reel up`: Ctrl-C stops every process; a second run reuses the data directory."""

from __future__ import annotations

import socket
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
