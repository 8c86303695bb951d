"""API viewers: search, videos, comments, ratings, views and trending against control (--control).

    locust -f loadtest/suites/api.py --headless -u 50 -t 2m --host http://127.0.0.1:8400 \
        --catalog reel-data/loadtest-catalog.json --csv results/api
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `loadtest` as a package, run from anywhere

from loadtest import runtime, users  # noqa: E402,F401 - runtime registers options, tallies, report
from loadtest.shapes import Steady  # noqa: E402,F401 - the shape of this suite


class Browser(users.ApiViewer):
    host = "http://127.0.0.1:8400"
