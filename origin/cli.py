"""`reel origin`: serve a store by the object layout. The app is loaded when the command runs."""

from __future__ import annotations

import argparse

from origin.store import STORE_HELP
from reel.playback_token import KEYS_HELP
from reel.settings import Command, Flags


def add_flags(flags: Flags) -> None:
    flags.flag("--store", required=True, help=STORE_HELP)
    flags.flag("--host", default="127.0.0.1", help="listen address")
    flags.flag("--port", default=8100, type=int, help="listen port")
    flags.flag("--region", default=None, help="region this origin is in")
    flags.flag("--playback-keys", default=None, help=KEYS_HELP)
    flags.flag("--live", default=None,
               help="ingest's live HTTP URL: /live/... is asked of it first (the newest parts "
                    "exist only there), the store serving what it holds when the ingest is unreachable")
    flags.flag("--live-hold", default=4.0, type=float,
               help="seconds to wait for the ingest's answer (a blocking reload holds up to three "
                    "target durations)")


def run(args: argparse.Namespace) -> int:
    from origin.app import make_app
    from origin.store import open_store
    from reel.playback_token import load_ring
    from reel.service import serve

    ring = load_ring(args.playback_keys)
    serve(make_app(open_store(args.store), region=args.region, ring=ring, live=args.live,
                   live_hold=args.live_hold), args.host, args.port)
    return 0


ORIGIN = Command("origin", "serve a store by the object layout", add_flags, run)
