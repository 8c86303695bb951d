"""Live at celebrity scale: LL-HLS viewers (loadtest/liveplayer.py, as hls.js in low-latency
mode) of a celebrity's stream and a long tail of small ones; a tenth of --users at first, then ten
times that within 10 s (shapes.Surge).

    reel loadtest live --users 200 --duration 2m -- --live CELEB_ID,ID2,ID3 [--celebrity-share 0.8]
    locust -f loadtest/suites/live.py --headless -u 200 -t 2m --host http://127.0.0.1:8400 \\
        --live CELEB_ID,ID2 --csv results/live

Each viewer follows the audio rendition the master names beside its video one (requests named
"live audio ..."; `--no-live-audio`: video only). The report adds, to the VOD suites' plots:
viewer latency p50/p99 (video's PROGRAM-DATE-TIME against the wall clock), upstream part
requests per part per edge (the edges' /metrics against the parts their viewers got, audio's and
video's summed, each rendition's part one part), edge CPU per 1,000 viewers; stalls per minute
as before (a late part of either rendition). Locust's gevent
users hold a few hundred blocking viewers per process (--processes -1 for more); the benchmark
with thousands is loadtest/bench_live_edge.py (asyncio, many viewers per process).
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # `loadtest` as a package, run from anywhere

from loadtest import liveplayer, runtime  # noqa: E402,F401 - runtime registers options, tallies, report
from loadtest.shapes import Surge  # noqa: E402,F401 - the shape of this suite


class Viewer(liveplayer.LiveViewer):
    host = "http://127.0.0.1:8400"
