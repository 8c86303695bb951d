"""The API suite's floor: the same users at the same pace, each request one cached read through
the edge (`GET /api/v1/trending`, the same for everyone). Whatever p99 this shows on a machine,
the `api` suite cannot beat there: it is the client, the edge and the machine's scheduling, with
nothing of control in it.

    reel loadtest apifloor --users 200 --control EDGE_URL
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `loadtest` as a package, run from anywhere

from loadtest import runtime, users  # noqa: E402,F401 - runtime registers options, tallies, report
from loadtest.shapes import Steady  # noqa: E402,F401 - the shape of this suite


class Floor(users.ApiFloor):
    host = "http://127.0.0.1:8400"
