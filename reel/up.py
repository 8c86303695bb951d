"""`reel up`: every service on one machine, on loopback, with embedded defaults.

geo (port base), control (+1), one origin per region (+2, +3), one worker, and one edge per
region (+10, +11), in two regions. Every origin serves the same store (DATA/objects): in a real
deployment each region's origins read the same bucket. Each edge reads the regions file and asks
its own region's origin first, then the others by distance. Each service is its own process,
exactly as `reel <command>` would run it on its own machine; their logs go to DATA/logs/.
`reel up` supervises them as systemd's `Restart=on-failure` would (`reel.supervisor`): a service
that dies is logged and started again, with backoff, while the others keep running; one that
keeps dying right after it starts stops the stack. Ctrl-C (or SIGTERM) stops them all.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from origin.store import STORE_HELP, open_store
from reel.playback_token import write_ring
from reel.service import PARENT_ENV
from reel.settings import Command, Flags
from reel.supervisor import GaveUp, Supervisor

HEALTH_TIMEOUT = 30.0
DEMO_TIMEOUT = 600.0

# Ingest's ports, from the port base (DESIGN.md: RTMP +20, SRT +21; its live HTTP app +22).
RTMP, SRT, INGEST_HTTP = 20, 21, 22

REGIONS = (
    # name, latitude, longitude: two regions far apart so geo's choice is visible.
    ("eu-west", 51.51, -0.13),
    ("ap-southeast", -33.87, 151.21),
)


@dataclass
class Stack:
    data: Path
    host: str
    port_base: int
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    purge_token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    # Edges prove themselves to control with it, so it believes the client addresses they forward.
    edge_secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    store_spec: str | None = None  # `--store`: s3://... instead of DATA/objects
    control_workers: int = 0  # `reel control --workers`: 0, one per core (as the edges)

    def url(self, offset: int) -> str:
        return f"http://{self.host}:{self.port_base + offset}"

    @property
    def geo(self) -> str:
        return self.url(0)

    @property
    def control(self) -> str:
        return self.url(1)

    def origin(self, index: int) -> str:
        return self.url(2 + index)

    def edge(self, index: int) -> str:
        return self.url(10 + index)

    @property
    def rtmp(self) -> str:
        return f"rtmp://{self.host}:{self.port_base + RTMP}/live"

    @property
    def srt(self) -> str:
        return f"srt://{self.host}:{self.port_base + SRT}"

    @property
    def ingest(self) -> str:
        """The ingest's live HTTP app (LL-HLS from memory), which the origins ask for /live/."""
        return self.url(INGEST_HTTP)

    @property
    def store(self) -> Path | str:
        return self.store_spec or self.data / "objects"

    @property
    def playback_keys(self) -> Path:
        """The playback token key ring every service shares (made on the first run, kept after:
        tokens handed out stay valid across restarts; add a key here to rotate)."""
        return write_ring(self.data / "playback-keys.json")

    @property
    def regions_file(self) -> Path:
        return self.data / "regions.toml"

    def write_regions(self) -> Path:
        lines = [f'default = "{REGIONS[0][0]}"', ""]
        for index, (name, lat, lon) in enumerate(REGIONS):
            lines += [f"[regions.{name}]", f"lat = {lat}", f"lon = {lon}",
                      f'edges = ["{self.edge(index)}"]', f'origins = ["{self.origin(index)}"]', ""]
        path = self.regions_file
        path.write_text("\n".join(lines))
        return path

    def commands(self) -> dict[str, list[str]]:
        """Each service's `reel` arguments. A value always shares its word with its flag
        (`--purge-token=VALUE`): a generated secret that begins with `-` is never read as an option."""
        port = self.port_base
        regions = str(self.write_regions())
        keys = f"--playback-keys={self.playback_keys}"
        cmds = {
            "control": ["control", f"--data={self.data / 'control'}", f"--store={self.store}",
                        f"--port={port + 1}", f"--geo-url={self.geo}", f"--worker-token={self.token}",
                        f"--purge-token={self.purge_token}", f"--admin-email={ADMIN_EMAIL}", keys,
                        f"--workers={self.control_workers}",
                        "--edge", *(self.edge(i) for i in range(len(REGIONS)))],  # URLs: http://...
            "geo": ["geo", f"--regions={regions}", f"--port={port}", keys,
                    "--trusted-proxy", "127.0.0.1", "::1"],
            "worker": ["worker", f"--control={self.control}", f"--store={self.store}",
                       f"--token={self.token}"],
        }
        cmds["ingest"] = ["ingest", f"--control={self.control}", f"--token={self.token}",
                          f"--store={self.store}", f"--rtmp-port={port + RTMP}",
                          f"--srt-port={port + SRT}", f"--http-port={port + INGEST_HTTP}"]
        cmds["control"] += [f"--ingest-rtmp={self.rtmp}", f"--ingest-srt={self.srt}",
                            f"--edge-secret={self.edge_secret}"]
        for index, (region, _, _) in enumerate(REGIONS):
            cmds[f"origin-{region}"] = ["origin", f"--store={self.store}", f"--region={region}",
                                        f"--port={port + 2 + index}", keys, f"--live={self.ingest}"]
            cmds[f"edge-{region}"] = ["edge", f"--region={region}", f"--regions={regions}",
                                      f"--port={port + 10 + index}", "--cache-mb=256",
                                      f"--purge-token={self.purge_token}", keys,
                                      f"--control={self.control}", f"--control-secret={self.edge_secret}"]
        for name, args in cmds.items():
            if name != "worker":  # the worker listens on nothing
                args.insert(1, f"--host={self.host}")
        return cmds

    def supervisor(self, commands: dict[str, list[str]] | None = None) -> Supervisor:
        """The services (`commands()`, or these `reel` arguments), each to run as `reel` would,
        its output in DATA/logs/NAME.log; nothing is started yet."""
        return Supervisor(
            {name: [sys.executable, "-m", "reel", *args]
             for name, args in (commands or self.commands()).items()},
            self.data / "logs",
            env={**os.environ, PARENT_ENV: str(os.getpid())},  # if we die, they stop
            say=lambda line: print(f"reel up: {line}", file=sys.stderr, flush=True))

    def ports_in_use(self) -> list[int]:
        busy = []
        for offset in (0, 1, *(2 + i for i in range(len(REGIONS))),
                       *(10 + i for i in range(len(REGIONS))), RTMP, INGEST_HTTP):
            with socket.socket() as probe:
                # As the services bind: connections of a stack just stopped (TIME_WAIT) are no
                # reason to refuse; only a listener is.
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.host, self.port_base + offset))
                except OSError:
                    busy.append(self.port_base + offset)
        return busy


async def _wait_healthy(stack: Stack, services: Supervisor) -> None:
    urls = {"geo": stack.geo, "control": stack.control}
    for index, (region, _, _) in enumerate(REGIONS):
        urls.update({f"origin-{region}": stack.origin(index), f"edge-{region}": stack.edge(index)})
    urls["ingest"] = stack.ingest
    deadline = time.monotonic() + HEALTH_TIMEOUT
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as http:
        for name, url in urls.items():
            while True:
                services.poll()
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with http.get(url + "/healthz") as resp:
                        if resp.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} is not healthy at {url} after {HEALTH_TIMEOUT:.0f} s")
                await asyncio.sleep(0.2)


DEMO_PASSWORD = "reel-demo-password"
ADMIN_EMAIL = "admin@reel.invalid"


async def _admin_token(stack: Stack) -> Path:
    """Sign the stack's admin in and write a bearer token to DATA/admin-token (owner-only), for
    tools such as the load-test seeder. The password is made once and kept in DATA/admin.json."""
    secret = stack.data / "admin.json"
    if secret.exists():
        account = json.loads(secret.read_text())
    else:
        account = {"email": ADMIN_EMAIL, "password": secrets.token_urlsafe(24), "name": "reel admin"}
        secret.touch(mode=0o600)
        secret.write_text(json.dumps(account))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        token = await _sign_up_or_in(http, stack.control, account, f"admin (remove {secret}?)")
    path = stack.data / "admin-token"
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return path


async def _sign_up_or_in(http: aiohttp.ClientSession, control: str, account: dict[str, str],
                         who: str) -> str:
    """Sign `account` up (or find it exists) and in; its bearer token."""
    async with http.post(f"{control}/api/v1/users", json=account) as resp:
        if resp.status not in (201, 409):
            raise RuntimeError(f"{who} sign-up refused: {resp.status} {await resp.text()}")
    async with http.post(f"{control}/api/v1/sessions", json=account) as resp:
        if resp.status != 201:
            raise RuntimeError(f"{who} sign-in refused: {resp.status} {await resp.text()}")
        return (await resp.json())["token"]


async def _demo_user(http: aiohttp.ClientSession, control: str) -> dict[str, str]:
    """A demo creator for this run; its auth header.

    One account per run: the demo clip is the same bytes every time, and a creator uploading the
    same content again gets their existing video back, while each run shows a fresh upload."""
    account = {"email": f"demo-{time.time_ns()}@reel.invalid", "password": DEMO_PASSWORD,
               "name": "reel demo"}
    return {"Authorization": f"Bearer {await _sign_up_or_in(http, control, account, 'demo')}"}


async def _demo(stack: Stack, services: Supervisor, seconds: float) -> dict:
    from packager.testclip import make_test_clip

    clip = stack.data / "demo" / f"clip-{seconds:g}s.mp4"
    if not clip.exists():
        clip.parent.mkdir(parents=True, exist_ok=True)
        await asyncio.to_thread(make_test_clip, clip.with_suffix(".tmp.mp4"), seconds=seconds,
                                width=1280, height=720, fps=30)
        clip.with_suffix(".tmp.mp4").rename(clip)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        auth = await _demo_user(http, stack.control)
        with await asyncio.to_thread(open, clip, "rb") as f:
            form = aiohttp.FormData()
            form.add_field("title", "reel demo: test pattern")
            form.add_field("file", f, filename=clip.name, content_type="video/mp4")
            # A second `reel up --demo` on the same data gets the same (deduplicated) video: 200.
            async with http.post(stack.control + "/api/v1/videos", data=form,
                                 headers=auth) as resp:
                if resp.status not in (200, 202):
                    raise RuntimeError(f"upload refused: {resp.status} {await resp.text()}")
                video = (await resp.json())["video"]
        print(f"uploaded   video {video['id']}; packaging...", flush=True)
        video = await _until_packaged(http, stack, services, video)
    if video["state"] == "failed":
        raise RuntimeError(f"demo video failed: {video['reason']}")
    return video


async def _until_packaged(http: aiohttp.ClientSession, stack: Stack, services: Supervisor,
                          video: dict) -> dict:
    """Polls the video until it is ready or failed, showing the progress the API reports (the
    worker's figures: milliseconds of the source done of its total)."""
    from packager.progress import Report, display

    shown = display("auto")
    deadline = time.monotonic() + DEMO_TIMEOUT
    try:
        while video["state"] not in ("ready", "failed"):
            if time.monotonic() > deadline:
                raise RuntimeError(f"video {video['id']} not ready after {DEMO_TIMEOUT:.0f} s")
            if (progress := video.get("progress")) and progress["total"] > 0:
                shown(Report("encode", progress["done"] / 1000, progress["total"] / 1000))
            services.poll()
            await asyncio.sleep(0.5)
            async with http.get(f"{stack.control}/api/v1/videos/{video['id']}") as resp:
                video = await resp.json()
        if video["state"] == "ready":
            shown(Report("done", 1.0, 1.0))
    finally:
        shown.close()
    return video


async def _create_live(stack: Stack) -> dict:
    """A live stream made through control's API: its video, stream key and ingest URLs."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as http:
        auth = await _demo_user(http, stack.control)
        async with http.post(stack.control + "/api/v1/live", headers=auth,
                             json={"title": "reel demo: live test pattern"}) as resp:
            if resp.status != 201:
                raise RuntimeError(f"live stream refused: {resp.status} {await resp.text()}")
            return await resp.json()


def _publish_test_pattern(stack: Stack, rtmp: str) -> subprocess.Popen:
    """An ffmpeg child publishing a test pattern and a tone it makes itself (nothing downloaded;
    PyAV publishing in this process would share its loop with the network)."""
    with open(stack.data / "logs" / "live-demo.log", "ab") as log:  # the child keeps its copy
        return subprocess.Popen(
            ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "warning", "-re",
             "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
             "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-g", "30",
             "-b:v", "1500k", "-c:a", "aac", "-ac", "2", "-b:a", "128k", "-f", "flv", rtmp],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


async def _until_live(stack: Stack, video: dict, publisher: subprocess.Popen) -> dict:
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        while video["state"] != "live":
            if time.monotonic() > deadline or publisher.poll() is not None:
                raise RuntimeError(f"live demo {video['id']} never went live; see live-demo.log")
            await asyncio.sleep(0.5)
            async with http.get(f"{stack.control}/api/v1/videos/{video['id']}") as resp:
                video = await resp.json()
    return video


def _supervise(services: Supervisor) -> None:
    """Keep the services running until SIGTERM (or Ctrl-C: KeyboardInterrupt)."""
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    while not stop:
        services.poll()
        time.sleep(0.2)


def run_up(data: Path, host: str, port_base: int, demo: bool = False,
           demo_seconds: float = 20.0, store: str | None = None, demo_live: bool = True,
           control_workers: int = 0) -> int:
    if store is not None:
        open_store(store)  # a bad spec is a clear error (StoreError) before anything starts
    stack = Stack(data.resolve(), host, port_base, store_spec=store,
                  control_workers=control_workers)
    stack.data.mkdir(parents=True, exist_ok=True)
    if busy := stack.ports_in_use():
        print(f"reel up: port {', '.join(map(str, busy))} already in use (another `reel up`?); "
              "stop it or choose --port-base", file=sys.stderr)
        return 1
    # Ctrl-C must stop the stack even when started from a shell that ignores SIGINT (`cmd &`).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    services = stack.supervisor()
    services.start()
    publisher: list[subprocess.Popen] = []  # the demo's live test pattern, once started
    try:
        asyncio.run(_wait_healthy(stack, services))
        print("reel is up", flush=True)
        print(f"  geo        {stack.geo}")
        print(f"  control    {stack.control}/api/v1/  (OpenAPI: {stack.control}/api/v1/openapi.json)")
        for index, (region, _, _) in enumerate(REGIONS):
            print(f"  origin     {stack.origin(index)}  ({region})")
        for index, (region, _, _) in enumerate(REGIONS):
            print(f"  edge       {stack.edge(index)}  ({region})")
        print(f"  ingest     {stack.rtmp}/STREAM_KEY, {stack.srt}?streamid=publish:STREAM_KEY "
              f"(live HTTP {stack.ingest})")
        print(f"  logs       {stack.data / 'logs'}")
        print(f"  admin      {ADMIN_EMAIL}, bearer token in {asyncio.run(_admin_token(stack))}",
              flush=True)
        if demo:
            video = asyncio.run(_demo(stack, services, demo_seconds))
            print(f"demo video {video['id']} is ready", flush=True)
            print(f"  playback   {video['playback_url']}")
            print(f"  watch      {video['watch_url']}", flush=True)
        if demo and demo_live:
            created = asyncio.run(_create_live(stack))
            publisher.append(_publish_test_pattern(stack, created["ingest"]["rtmp"]))
            live = asyncio.run(_until_live(stack, created["video"], publisher[0]))
            print(f"demo live  {live['id']} is live (a test pattern from ffmpeg)", flush=True)
            print(f"  playback   {live['playback_url']}")
            print(f"  watch      {live['watch_url']}", flush=True)
        print("Ctrl-C stops everything.", flush=True)
        _supervise(services)
        return 0
    except GaveUp as exc:
        print(f"reel up: {exc}; stopping everything", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        print(f"reel up: {exc}; logs in {stack.data / 'logs'}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        # A second Ctrl-C must not cut the clean-up short and leave children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for proc in publisher:
            proc.terminate()
        services.stop()
        print("reel up: stopped", file=sys.stderr, flush=True)


def add_flags(flags: Flags) -> None:
    flags.flag("--data", default="./reel-data", type=Path, help="data directory (database, objects)")
    flags.flag("--store", default=None, help=STORE_HELP.replace("a directory", "DATA/objects (default)", 1))
    flags.flag("--demo", action="store_true", help="make a test clip, upload it and print its URLs")
    flags.flag("--demo-seconds", default=20.0, type=float, help="length of the demo clip")
    flags.flag("--no-demo-live", action="store_true",
               help="with --demo: no live test pattern (its real-time ladder takes most of a core)")
    flags.flag("--host", default="127.0.0.1", help="address every service listens on")
    flags.flag("--control-workers", default=0, type=int,
               help="control's worker processes (reel control --workers; 0: one per core)")
    flags.flag("--port-base", default=8400, type=int,
               help="geo listens here, control +1, origins +2, +3, edges +10, +11 (one of each per region), "
                    "ingest RTMP +20, SRT +21 (UDP), live HTTP +22")


def run(args: argparse.Namespace) -> int:
    return run_up(args.data, args.host, args.port_base, demo=args.demo, demo_seconds=args.demo_seconds,
                  store=args.store, demo_live=not args.no_demo_live,
                  control_workers=args.control_workers)


UP = Command("up", "everything on one machine, embedded defaults", add_flags, run)
