"""`reel package` (offline: INPUT -> OUTDIR) and `reel worker` (claims packaging jobs from
control). The packager is loaded when a command runs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from origin.store import STORE_HELP
from reel.settings import Command, Flags


def add_package_flags(flags: Flags) -> None:
    flags.parser.add_argument("input", type=Path, help="any file FFmpeg can decode")
    flags.parser.add_argument("outdir", type=Path, help="receives master.m3u8 and renditions")
    flags.flag("--segment-seconds", default=6.0, type=float, help="target segment duration")
    flags.flag("--preset", default="veryfast", help="x264 preset")
    flags.flag("--max-seconds", default=4 * 3600.0, type=float, help="longest accepted input")
    flags.flag("--max-height", default=2160, type=int, help="tallest accepted input")
    flags.flag("--workers", default=1, type=int,
               help="processes: inputs longer than two chunks are encoded in parallel chunks")
    flags.flag("--chunk-seconds", default=60.0, type=float, help="chunk length with --workers")
    flags.flag("--progress", default="auto", choices=["auto", "bar", "lines", "json", "none"],
               help="auto: a live bar on a terminal, a line every few seconds elsewhere; "
                    "json: one JSON object a report on stdout")
    flags.flag("--quiet", action="store_true", help="print only the result")


def run_package(args: argparse.Namespace) -> int:
    from packager import Limits, PackagingError, package
    from packager.progress import display

    shown = display("none" if args.quiet else args.progress)
    try:
        result = package(args.input, args.outdir, segment_seconds=args.segment_seconds,
                         preset=args.preset,
                         limits=Limits(max_seconds=args.max_seconds, max_height=args.max_height),
                         workers=args.workers, chunk_seconds=args.chunk_seconds, progress=shown)
    except PackagingError as exc:
        shown.close()  # the bar goes before the reason is printed, on a line of its own
        print(f"reel package: {exc.reason}: {exc}", file=sys.stderr)
        return 2
    shown.close()
    print(result.master)
    return 0


def add_worker_flags(flags: Flags) -> None:
    flags.flag("--control", required=True, help="control URL")
    flags.flag("--store", required=True, help=STORE_HELP)
    flags.flag("--token", required=True, help="worker token control expects")
    flags.flag("--job-timeout", default=3600.0, type=float, help="seconds before a job is killed")
    flags.flag("--processes", default=1, type=int,
               help="encoding processes per job: long videos are cut into chunks encoded in parallel")


def run_worker(args: argparse.Namespace) -> int:
    from origin.store import open_store
    from packager import worker
    from reel.service import run_until_signal

    open_store(args.store)  # a bad store spec fails here, before any job is claimed
    run_until_signal(lambda stop: worker.run_worker(args.control, args.store, args.token, stop,
                                                    job_timeout=args.job_timeout,
                                                    processes=args.processes))
    return 0


def add_ingest_flags(flags: Flags) -> None:
    flags.flag("--control", default=None, help="control URL (admits stream keys, hears of each stream)")
    flags.flag("--token", default=None, help="worker token control expects")
    flags.flag("--static-key", default=[], nargs="*",
               help="KEY=VIDEO_ID: admit this stream key as this video, without control (development)")
    flags.flag("--store", required=True, help=STORE_HELP)
    flags.flag("--host", default="127.0.0.1", help="listen address (RTMP, SRT, HTTP)")
    flags.flag("--rtmp-port", default=1935, type=int, help="RTMP listen port")
    flags.flag("--srt-port", default=None, type=int, help="SRT listen port (UDP; none: no SRT)")
    flags.flag("--http-port", default=8422, type=int,
               help="live HTTP port: LL-HLS from memory for origins, /healthz, /metrics")
    flags.flag("--max-streams", default=4, type=int, help="live streams ingested at once")
    flags.flag("--preset", default="veryfast", help="x264 preset of the live ladder (it degrades from there)")


def run_ingest(args: argparse.Namespace) -> int:
    from origin.store import open_store
    from packager.live.config import LiveConfig
    from packager.live.ingest import Ingest, Ports, StaticKeys
    from reel.service import run_until_signal

    keys = dict(item.partition("=")[::2] for item in args.static_key)
    if not args.control and not keys:
        print("reel ingest: give --control URL --token TOKEN, or --static-key KEY=VIDEO_ID", file=sys.stderr)
        return 2
    open_store(args.store)  # a bad store spec fails here, before any publisher is admitted

    async def main(stop) -> None:
        control = None
        if args.control:
            from packager.live.control import IngestControl

            control = IngestControl(args.control, args.token or "")
        ingest = Ingest(control or StaticKeys(keys), args.store,
                        Ports(args.rtmp_port, args.http_port, args.srt_port),
                        host=args.host, max_streams=args.max_streams,
                        config=LiveConfig(preset=args.preset))
        try:
            await ingest.start()
            await stop.wait()
        finally:
            await ingest.close()
            if control is not None:
                await control.close()

    run_until_signal(main)
    return 0


PACKAGE = Command("package", "offline packager: INPUT -> OUTDIR", add_package_flags, run_package)
WORKER = Command("worker", "claim and run packaging jobs", add_worker_flags, run_worker)
INGEST = Command("ingest", "live: RTMP/SRT in by stream key, real-time ABR, LL-HLS out",
                 add_ingest_flags, run_ingest)
