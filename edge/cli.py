"""`reel edge`: a caching edge for one region. The app is loaded when the command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from reel.playback_token import KEYS_HELP
from reel.settings import Command, Flags


def add_flags(flags: Flags) -> None:
    flags.flag("--region", required=True, help="region this edge serves")
    flags.flag("--origin", default=[], nargs="+", help="origin URLs, nearest first")
    flags.flag("--regions", default=None, type=Path,
               help="regions file: take the origins from it, nearest to --region first")
    flags.flag("--host", default="127.0.0.1", help="listen address")
    flags.flag("--port", default=8200, type=int, help="listen port")
    flags.flag("--cache-mb", default=256, type=int, help="cache size in MiB (per worker)")
    flags.flag("--shield", default=None, help="regional shield edge URL (the origins stay as fallback)")
    flags.flag("--purge-token", default=None, help="bearer token POST /purge requires (none: purge is off)")
    flags.flag("--workers", default=0, type=int,
               help="processes sharing the port (SO_REUSEPORT), each with its own cache; 0: one per CPU")
    flags.flag("--prefetch", default=3, type=int, help="media segments fetched ahead of a viewer (0: off)")
    flags.flag("--live-prefetch", default=64, type=int,
               help="live blocking reloads and hinted parts asked for ahead of viewers at once (0: off)")
    flags.flag("--stale-while-revalidate", default=2.0, type=float,
               help="seconds an expired object is served while it is refreshed, when the origin says nothing")
    flags.flag("--stale-if-error", default=86400.0, type=float,
               help="seconds an expired object stands in for a failing origin, when the origin says nothing")
    flags.flag("--access-log", action="store_true", help="log one JSON line per request")
    flags.flag("--playback-keys", default=None, help=KEYS_HELP)
    flags.flag("--control", default=None,
               help="control's URL: serve /api/v1/ from it (public reads cached and coalesced)")
    flags.flag("--control-secret", default=None,
               help="shared secret control's --edge-secret expects: it then believes the client "
                    "addresses this edge forwards (X-Forwarded-For), so rate limits stay per client")
    flags.flag("--api-cache-mb", default=0, type=int,
               help="cache for control's public reads, in MiB per worker (0: a sixteenth of --cache-mb)")


def run(args: argparse.Namespace) -> int:
    from edge import workers
    from edge.app import make_app
    from edge.upstream import ConfigError, origins_nearest
    from reel.playback_token import load_ring

    try:
        origins = origins_nearest(args.regions, args.region) if args.regions else args.origin
    except ConfigError as exc:
        print(f"reel edge: {exc}", file=sys.stderr)
        return 2
    if not origins:
        print("reel edge: give --origin URL... or --regions FILE", file=sys.stderr)
        return 2

    def build(**cluster: object):
        return make_app(region=args.region, origins=origins,
                        cache_bytes=args.cache_mb * 1024 * 1024, shield=args.shield,
                        purge_token=args.purge_token, prefetch_segments=args.prefetch,
                        live_prefetch=args.live_prefetch,
                        stale_while_revalidate=args.stale_while_revalidate,
                        stale_if_error=args.stale_if_error, ring=load_ring(args.playback_keys),
                        control=args.control, control_secret=args.control_secret,
                        api_cache_bytes=args.api_cache_mb * 1024 * 1024 or None, **cluster)

    return workers.run(build, args.host, args.port, args.workers or workers.cpu_count(),
                       access_log=args.access_log)


EDGE = Command("edge", "caching edge for one region", add_flags, run)
