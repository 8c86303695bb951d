"""Step load: players added in --steps equal steps up to --users, to find where it saturates.

    locust -f loadtest/suites/step.py --headless -u 50 -t 2m --host http://127.0.0.1:8400 \
        --catalog reel-data/loadtest-catalog.json --csv results/step
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `loadtest` as a package, run from anywhere

from loadtest import runtime, users  # noqa: E402,F401 - runtime registers options, tallies, report
from loadtest.shapes import Step  # noqa: E402,F401 - the shape of this suite


class Viewer(users.HlsPlayer):
    host = "http://127.0.0.1:8400"
