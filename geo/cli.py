"""`reel geo`: send players to their nearest healthy edge. The app (GeoIP2, health probes) is
loaded when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reel.playback_token import KEYS_HELP
from reel.settings import Command, Flags


def add_flags(flags: Flags) -> None:
    flags.flag("--regions", required=True, type=Path, help="regions file (TOML)")
    flags.flag("--host", default="127.0.0.1", help="listen address")
    flags.flag("--port", default=8000, type=int, help="listen port")
    flags.flag("--geoip-db", default=None, type=Path, help="GeoIP2 City .mmdb")
    flags.flag("--trusted-proxy", default=[], nargs="*",
               help="addresses or networks whose X-Forwarded-For is believed")
    flags.flag("--probe-interval", default=2.0, type=float, help="seconds between health probes of an edge")
    flags.flag("--probe-timeout", default=1.0, type=float, help="seconds a health probe may take")
    flags.flag("--fall", default=2, type=int, help="failed probes in a row that take an edge out")
    flags.flag("--rise", default=2, type=int, help="good probes in a row that bring an edge back")
    flags.flag("--playback-keys", default=None, help=KEYS_HELP)
    flags.flag("--steering-ttl", default=10, type=int,
               help="seconds HLS players keep a steering manifest before asking again")


def run(args: argparse.Namespace) -> int:
    from geo.app import make_app
    from geo.regions import ConfigError
    from reel.playback_token import load_ring
    from reel.service import serve

    try:
        app = make_app(args.regions, geoip_db=args.geoip_db, trusted_proxies=args.trusted_proxy,
                       probe_interval=args.probe_interval, probe_timeout=args.probe_timeout,
                       fall=args.fall, rise=args.rise, steering_ttl=args.steering_ttl,
                       ring=load_ring(args.playback_keys))
    except ConfigError as exc:
        print(f"reel geo: {exc}", file=sys.stderr)
        return 2
    serve(app, args.host, args.port)
    return 0


GEO = Command("geo", "send players to their nearest healthy edge", add_flags, run)
