"""Glass-to-glass latency of reel live against nginx-rtmp, read from the pictures themselves.

    python -m loadtest.bench_live [--seconds 60] [--bitrate 3000] [--keep]

Needs nginx with its RTMP module, ffmpeg, node_modules/hls.js and Chromium (Debian: apt-get install
nginx libnginx-mod-rtmp ffmpeg chromium). One run, everything on loopback, nothing else touched:

- a 720p30 publisher (loadtest/live_publisher.py, its own process at nice -10: a camera on its
  own machine) draws ffmpeg's moving test pattern with the wall clock's milliseconds burned into
  each picture as it is made (loadtest/live_clock.py), encodes it once (x264 zerolatency, an IDR
  each second, AAC) and sends the same FLV bytes to reel's RTMP ingest and to nginx-rtmp, each
  through its own queue and ffmpeg relay: identical input, and a slow peer delays only itself;
- reel: `reel up` (no demo) in a temporary directory; the stream is made through control's API,
  as a creator would, and viewers play its playback URL: geo -> edge -> origin -> ingest, with
  the ladder's three rungs for a 720p source;
- nginx-rtmp: `hls on; hls_fragment 1s`, a short playlist, its HLS served by nginx on loopback;
- once the ladder has kept the same rungs for 6 s (a busy machine makes the ingest drop rungs in
  its first seconds), hls.js players in headless Chromium, one after the other (--together: at
  once), for --seconds each: reel LL-HLS
  (lowLatencyMode on), reel plain HLS (lowLatencyMode off: HOLD-BACK, whole segments), nginx-rtmp
  HLS (hls.js defaults). Each page draws every presented frame (requestVideoFrameCallback) to a
  canvas, reads the burned clock back (loadtest/live_clock.js) and keeps Date.now() - clock: the
  same machine, the same clock.

Printed per player: p50/p90/max latency, frames read, stalls after playback started (`waiting`
events and the time spent waiting), where the latency goes (hls.js's distance behind the
playlist's live edge, the distance it aims for, now minus the picture's PROGRAM-DATE-TIME), the
rungs played; ratios reel/nginx-rtmp; the ladder's own metrics (rungs dropped, presets, per-rung
delay); and the CPU seconds
the reel ingest process (RTMP, decode, the ladder's encoders, LL-HLS) used per second of stream,
read from /proc, beside the publisher's and nginx's. The load average is printed too: the
machine may be shared, so run it more than once.

--load N (issue 15): after the LL-HLS player, the same player again while N simulated LL-HLS
viewers (loadtest/llviewers.py: each its video rendition and the audio one) read the same stream
through the same edge; printed: the player's
p50/p90 alone and under load and the difference (target: p50 within 0.3 s), stalls of both, the
edge's upstream requests per part per rendition, fan-out lag and CPU in each window.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from loadtest import live_clock, llviewers  # noqa: E402
from loadtest.llhls import LivePlaylist  # noqa: E402

HLSJS = ROOT / "node_modules" / "hls.js" / "dist" / "hls.min.js"
READER = Path(live_clock.__file__).with_name("live_clock.js")
NGINX_RTMP = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
BOUND = 120.0  # seconds any one step may take on a busy machine before the run gives up
# What reel's watch page gives hls.js (control/static/app/player.js): catch up after a stall.
WATCH_PAGE = {"maxLiveSyncPlaybackRate": 1.5}
PLAYERS = {"reel LL-HLS": "ll", "reel HLS": "hls", "nginx-rtmp HLS": "nginx",
           "reel LL-HLS at ingest": "ll-ingest"}
LOADED = "reel LL-HLS under load"  # --load: the LL-HLS player again, beside N simulated viewers
TARGETS = "targets: reel LL-HLS p50 <= 1.5 s, p90 <= 2.5 s, <= 0.5x nginx-rtmp; plain HLS <= 6 s; no stall"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_base(span: int = 23) -> int:
    """`reel up` takes ports base .. base+22."""
    for attempt in range(200):
        base = 20000 + (os.getpid() * 7 + attempt * 131 + int(time.time() * 1000)) % 30000
        try:
            for offset in range(span):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + offset))
        except OSError:
            continue
        return base
    raise SystemExit("no free ports")


def call(method: str, url: str, body: dict | None = None, token: str | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url, method=method, data=json.dumps(body).encode() if body is not None else None,
        headers={"Content-Type": "application/json",
                 **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:  # noqa: S310 - loopback only
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (/proc/PID/stat, clock ticks)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return []


class Processes:
    """Everything this run started, stopped at the end whatever happens."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdout", (self.workdir / f"{name}.log").open("wb"))
        proc = subprocess.Popen(argv, stderr=subprocess.STDOUT, cwd=ROOT, **kw)
        self.procs.append((name, proc))
        return proc

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                # `reel up` stops its services on SIGINT, as on Ctrl-C.
                proc.send_signal(signal.SIGINT if name == "reel" else signal.SIGTERM)
        for _, proc in reversed(self.procs):
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def nginx_rtmp(procs: Processes, rtmp_port: int, http_port: int) -> None:
    """nginx-rtmp with 1 s HLS fragments, and nginx http serving them (CORS for the page)."""
    tmp = procs.workdir / "nginx"
    hls = tmp / "hls"
    for sub in (hls, tmp / "tmp"):
        sub.mkdir(parents=True, exist_ok=True)
    conf = tmp / "nginx.conf"
    conf.write_text(f"""
load_module {NGINX_RTMP};
user root;
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 1024; }}
rtmp {{
  server {{
    listen 127.0.0.1:{rtmp_port};
    application live {{
      live on;
      hls on;
      hls_path {hls};
      hls_fragment 1s;
      hls_playlist_length 4s;
    }}
  }}
}}
http {{
  access_log off;
  client_body_temp_path {tmp}/tmp; proxy_temp_path {tmp}/tmp; fastcgi_temp_path {tmp}/tmp;
  uwsgi_temp_path {tmp}/tmp; scgi_temp_path {tmp}/tmp;
  types {{ application/vnd.apple.mpegurl m3u8; video/mp2t ts; }}
  server {{
    listen 127.0.0.1:{http_port};
    location /hls/ {{
      alias {hls}/;
      add_header Access-Control-Allow-Origin * always;
      add_header Cache-Control no-cache always;
    }}
  }}
}}
""")
    procs.start("nginx", ["nginx", "-c", str(conf), "-p", str(tmp)])


@dataclass
class Reel:
    """`reel up` and one live stream made through its API."""

    proc: subprocess.Popen
    port_base: int
    lines: list[str] = field(default_factory=list)

    def url(self, offset: int) -> str:
        return f"http://127.0.0.1:{self.port_base + offset}"

    def wait_for(self, pattern: str, procs: Processes) -> None:
        deadline = time.monotonic() + 3 * BOUND
        while time.monotonic() < deadline:
            if any(re.search(pattern, line) for line in self.lines):
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise SystemExit("`reel up` did not come up:\n" + "\n".join(self.lines[-30:])
                         + procs.log("reel"))

    def ingest_pid(self) -> int:
        for pid in children(self.proc.pid):
            if "ingest" in cmdline(pid):
                return pid
        raise SystemExit("no ingest process under `reel up`")


def start_reel(procs: Processes) -> Reel:
    base = free_port_base()
    data = procs.workdir / "reel"
    proc = procs.start("reel", [sys.executable, "-m", "reel", "up", "--data", str(data),
                                "--port-base", str(base)],
                       stdout=subprocess.PIPE, text=True, bufsize=1)
    reel = Reel(proc, base)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            reel.lines.append(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    reel.wait_for(r"^reel is up", procs)
    return reel


def create_stream(reel: Reel) -> dict:
    control = reel.url(1)
    account = {"email": f"bench-{time.time_ns()}@reel.invalid", "password": "bench-live-password",
               "name": "bench live"}
    status, body = call("POST", f"{control}/api/v1/users", account)
    if status != 201:
        raise SystemExit(f"sign-up refused: {status} {body}")
    status, session = call("POST", f"{control}/api/v1/sessions", account)
    if status != 201:
        raise SystemExit(f"sign-in refused: {status} {session}")
    status, created = call("POST", f"{control}/api/v1/live", {"title": "bench live"}, session["token"])
    if status != 201:
        raise SystemExit(f"live stream refused: {status} {created}")
    return created


class Publisher:
    """loadtest/live_publisher.py in its own process, a little ahead of everything else in the
    CPU queue (nice -10): it stands in for a camera on its own machine, and the figures are about
    what happens after it. Its counts are read when it stops."""

    def __init__(self, procs: Processes, urls: list[str], kbps: int, preset: str) -> None:
        self.counts_path = procs.workdir / "publisher.json"
        self.proc = procs.start("publisher", [
            sys.executable, "-m", "loadtest.live_publisher", "--kbps", str(kbps), "--preset", preset,
            "--counts", str(self.counts_path), *urls],
            stdin=subprocess.DEVNULL, preexec_fn=lambda: os.nice(-10) if os.geteuid() == 0 else None)
        self.relays: list[int] = []

    def cpu(self) -> float:
        """The publisher and its relays (one ffmpeg per peer), so far."""
        self.relays = self.relays or children(self.proc.pid)
        return cpu_seconds(self.proc.pid) + sum(cpu_seconds(pid) for pid in self.relays)

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        try:
            return json.loads(self.counts_path.read_text())
        except (OSError, ValueError):
            return {}


# The benchmark's page: one hls.js player, the clock read from every presented frame.
PAGE = """<!doctype html><meta charset=utf-8><video muted playsinline autoplay></video>
<script src="hls.min.js"></script><script src="live_clock.js"></script><script>
const q = new URLSearchParams(location.search);
const video = document.querySelector("video");
const W = 640, H = 360, STRIP = Math.ceil(H * CLOCK_STRIP);
const canvas = document.createElement("canvas"); canvas.width = W; canvas.height = H;
const ctx = canvas.getContext("2d", {willReadFrequently: true});
const b = window.bench = {samples: [], unread: 0, waiting: 0, stalledMs: 0, started: null,
                          waitingSince: null, errors: [], levels: [], recording: false,
                          edge: [], target: [], pdt: []};
video.addEventListener("playing", () => {
  if (b.started === null) b.started = Date.now();
  if (b.waitingSince !== null) { b.stalledMs += Date.now() - b.waitingSince; b.waitingSince = null; }
});
video.addEventListener("waiting", () => {
  if (b.started !== null && b.recording) { b.waiting += 1; b.waitingSince = Date.now(); }
});
const hls = window.hls = new Hls(JSON.parse(q.get("config") || "{}"));
hls.on(Hls.Events.ERROR, (e, d) => b.errors.push({details: d.details, fatal: d.fatal}));
hls.on(Hls.Events.FRAG_CHANGED, (e, d) => b.levels.push(hls.levels[d.frag.level].height));
hls.loadSource(q.get("src"));
hls.attachMedia(video);
video.play().catch(() => {});
function frame() {
  // Only the strip the clock is in: scaling a whole 720p picture per frame costs a software
  // compositor more than the decode.
  const vw = video.videoWidth, vh = video.videoHeight;
  if (vw && vh) ctx.drawImage(video, 0, 0, vw, vh * STRIP / H, 0, 0, W, STRIP);
  const burned = readClock(ctx.getImageData(0, 0, W, STRIP).data, W, H);
  if (b.recording) {
    if (burned === null) b.unread += 1; else b.samples.push(clockLatency(burned, Date.now()));
    // Where the time goes: hls.js's distance behind the playlist's live edge and its target,
    // and now minus the playing picture's PROGRAM-DATE-TIME (reel stamps it at ingest).
    if ((b.samples.length + b.unread) % 10 === 0) {
      if (hls.latency) b.edge.push(hls.latency * 1000);
      if (hls.targetLatency) b.target.push(hls.targetLatency * 1000);
      if (hls.playingDate) b.pdt.push(Date.now() - hls.playingDate.getTime());
    }
  }
  video.requestVideoFrameCallback(frame);
}
video.requestVideoFrameCallback(frame);
</script>"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.partition("?")[0]
        files = {"/": (PAGE.encode(), "text/html"), "/hls.min.js": (HLSJS, "text/javascript"),
                 "/live_clock.js": (READER, "text/javascript")}
        if path not in files:
            self.send_error(404)
            return
        body, kind = files[path]
        data = body if isinstance(body, bytes) else body.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


COLLECT = """() => { const b = window.bench;
    b.recording = false;
    const stalled = b.stalledMs + (b.waitingSince ? Date.now() - b.waitingSince : 0);
    return {samples: b.samples, unread: b.unread, waiting: b.waiting, stalled_ms: stalled,
            errors: b.errors, levels: [...new Set(b.levels)], edge: b.edge, target: b.target,
            pdt: b.pdt,
            dropped: document.querySelector("video").getVideoPlaybackQuality().droppedVideoFrames};
}"""


def watch(players: dict[str, tuple[str, dict]], seconds: float, together: bool,
          on_start: Callable[[], None], around: Callable[[str, bool], None] = lambda name, starting: None,
          ) -> dict[str, dict]:
    """Play every player for `seconds` once it has settled, one after the other (or all at once),
    and return what each saw; `around(name, True)` is called before a player's page opens and
    `around(name, False)` when its recording ends (one after the other only)."""
    from playwright.sync_api import sync_playwright

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    page_url = f"http://127.0.0.1:{server.server_address[1]}/"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
                "--disable-background-timer-throttling", "--disable-renderer-backgrounding",
                "--disable-backgrounding-occluded-windows"])
            try:
                def open_page(name: str):
                    src, config = players[name]
                    context = browser.new_context()
                    page = context.new_page()
                    page.goto(f"{page_url}?src={quote(src)}&config={quote(json.dumps(config))}")
                    try:
                        page.wait_for_function("() => window.bench.started !== null",
                                               timeout=BOUND * 1000)
                    except Exception as exc:  # noqa: BLE001 - say which player, with what it saw
                        seen = page.evaluate("() => window.bench.errors")
                        raise SystemExit(f"{name} never played: {seen}") from exc
                    return context, page

                def record(pages: dict) -> dict[str, dict]:
                    time.sleep(3)  # each player settles at its own live position first
                    for _, page in pages.values():
                        page.evaluate("() => { window.bench.recording = true; }")
                    on_start()
                    time.sleep(seconds)
                    seen = {name: page.evaluate(COLLECT) for name, (_, page) in pages.items()}
                    for context, _ in pages.values():
                        context.close()
                    return seen

                if together:
                    return record({name: open_page(name) for name in players})
                results = {}
                for name in players:
                    around(name, True)
                    results.update(record({name: open_page(name)}))
                    around(name, False)
                return results
            finally:
                browser.close()
    finally:
        server.shutdown()
        server.server_close()


def settle(ingest: str, video_id: str, quiet: float = 6.0) -> float:
    """Wait (at most BOUND) until the stream's ladder has kept the same rungs for `quiet` seconds:
    on a busy machine the ingest drops rungs in its first seconds, and the figures are of a
    stream in its steady state, not of its start. Returns the seconds waited."""
    start = time.monotonic()
    last, since = None, start
    while time.monotonic() - start < BOUND:
        try:
            with urllib.request.urlopen(f"{ingest}/live/{video_id}/master.m3u8", timeout=10) as resp:  # noqa: S310
                rungs = re.findall(r"^(v\d+)/index.m3u8$", resp.read().decode(), re.M)
        except OSError:
            rungs = None
        if rungs != last:
            last, since = rungs, time.monotonic()
        elif rungs and time.monotonic() - since >= quiet:
            break
        time.sleep(0.5)
    return time.monotonic() - start


def ladder_state(ingest: str, video_id: str) -> str:
    """What the ingest says of the stream's ladder at the end: the rungs it still encodes, the
    steps it took to keep real time, pictures it dropped, each rung's delay (its /metrics)."""
    try:
        with urllib.request.urlopen(f"{ingest}/metrics", timeout=10) as resp:  # noqa: S310
            text = resp.read().decode()
    except OSError as exc:
        return f"no metrics ({exc})"
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        match = re.match(r'reel_live_(\w+?)(?:_total)?\{(.*)\} (\S+)$', line)
        if match and f'stream="{video_id}' in match.group(2) and not match.group(1).endswith("_created"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
            what = labels.get("rendition") or labels.get("action", "")
            found.setdefault(match.group(1), []).append(f"{what}={float(match.group(3)):g}")
    return "  ".join(f"{name}: {', '.join(values)}" for name, values in sorted(found.items())) or "no series"


def median_s(values: list[float]) -> str:
    return f"{statistics.median(values) / 1000:.2f}" if values else "-"


def report(results: dict[str, dict], cpu: dict[str, float], wall: float, camera: dict) -> None:
    print(f"{'player':<22}{'p50 s':>8}{'p90 s':>8}{'max s':>8}{'frames':>8}{'unread':>8}"
          f"{'stalls':>8}{'stalled s':>10}{'edge':>6}{'target':>7}{'PDT':>6}  rungs played, errors")
    stats = {}
    for name, seen in results.items():
        lat = [ms / 1000 for ms in seen["samples"]]
        if not lat:
            print(f"{name:<22} no frame read ({seen['unread']} unreadable) errors {seen['errors']}")
            continue
        stats[name] = (statistics.median(lat), percentile(lat, 0.9), max(lat))
        errors = sorted({e["details"] + (" (fatal)" if e["fatal"] else "") for e in seen["errors"]})
        print(f"{name:<22}{stats[name][0]:8.2f}{stats[name][1]:8.2f}{stats[name][2]:8.2f}"
              f"{len(lat):8d}{seen['unread']:8d}{seen['waiting']:8d}{seen['stalled_ms'] / 1000:10.2f}"
              f"{median_s(seen['edge']):>6}{median_s(seen['target']):>7}{median_s(seen['pdt']):>6}"
              f"  {seen['levels']} {', '.join(errors) or '-'}")
    peer = stats.get("nginx-rtmp HLS")
    if peer:
        for name in ("reel LL-HLS", "reel HLS"):
            if name in stats:
                ours = stats[name]
                print(f"ratio {name}/nginx-rtmp: p50 {ours[0] / peer[0]:.2f}  p90 {ours[1] / peer[1]:.2f}"
                      f"  max {ours[2] / peer[2]:.2f}")
    print("CPU s per s of stream: " + "  ".join(f"{name} {used / wall:.2f}" for name, used in cpu.items()))
    if camera.get("dropped"):
        print(f"publisher: {camera['dropped']} of {camera['made'] + camera['dropped']} pictures dropped "
              "(this machine starved the publisher's encoder)")
    print("edge: hls.js's distance behind the playlist's live edge, target: the distance it aims "
          "for (PART-HOLD-BACK, or HOLD-BACK, plus 1 s at most after stalls), PDT: now minus the "
          "playing picture's PROGRAM-DATE-TIME (reel stamps it at ingest); medians, s")
    print(TARGETS)


class EdgeWindow:
    """What one edge did while a player recorded: its upstream requests for live parts against
    the parts the stream made (its renditions' playlists at the ingest, read every second), its
    fan-out lag histogram, its processes' CPU."""

    def __init__(self, edge: str, pids: list[int], ingest: str, video_id: str, renditions: list[str]) -> None:
        self.edge, self.pids, self.ingest = edge, pids, ingest
        self.paths = [f"/live/{video_id}/{r}/index.m3u8" for r in renditions]
        self.parts: dict[str, set[str]] = {path: set() for path in self.paths}
        self.first: dict[str, set[str]] = {}
        self.running = False
        self.thread: threading.Thread | None = None

    def metrics(self) -> tuple[dict[str, float], dict[float, float]]:
        # Each worker's /metrics adds the siblings that answer it within 2 s, which a loaded
        # machine may not: of a few readings, the one with the most requests has them all.
        readings = []
        for _ in range(3):
            with urllib.request.urlopen(f"{self.edge}/metrics", timeout=30) as resp:  # noqa: S310
                text = resp.read().decode()
            readings.append((sum(float(m[1]) for m in re.finditer(
                r"^reel_edge_requests_total\{.*\} (\S+)$", text, re.M)), text))
        text = max(readings)[1]
        kinds = {m[1]: float(m[2]) for m in re.finditer(
            r'^reel_edge_live_upstream_requests_total\{kind="(\w+)"\} (\S+)$', text, re.M)}
        return kinds, llviewers.lag_buckets(text)

    def _poll(self) -> None:
        while self.running:
            for path in self.paths:
                try:
                    with urllib.request.urlopen(self.ingest + path, timeout=5) as resp:  # noqa: S310
                        uris = set(LivePlaylist(resp.read().decode()).uris.values())
                except (OSError, ValueError):
                    continue
                self.first.setdefault(path, uris)
                self.parts[path] |= uris
            time.sleep(1.0)

    def start(self) -> None:
        self.kinds, self.lag = self.metrics()
        self.cpu = sum(cpu_seconds(pid) for pid in self.pids)
        self.wall = time.monotonic()
        self.running = True
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def stop(self) -> dict:
        self.running = False
        if self.thread:
            self.thread.join(10)
        kinds, lag = self.metrics()
        made = sum(len(self.parts[p] - self.first.get(p, set())) for p in self.paths)
        return {"parts": made, "renditions": len(self.paths),
                **{kind: kinds.get(kind, 0.0) - self.kinds.get(kind, 0.0) for kind in kinds},
                "lag": [llviewers.bucket_percentile(self.lag, lag, p) for p in (50, 99)],
                "cpu": sum(cpu_seconds(pid) for pid in self.pids) - self.cpu,
                "wall": time.monotonic() - self.wall}


class Load:
    """--load N: N simulated LL-HLS viewers on the edge geo sends the real player to, started
    before the loaded player's page opens (joined over `ramp` s, then 3 s to settle) and stopped
    when its recording ends; the edge is watched during both LL-HLS players. The viewers run at
    nice 10: they stand in for viewers on other machines, and what is measured is the edge's
    share of the CPU, not theirs (as the publisher, a camera, runs at nice -10)."""

    def __init__(self, reel: Reel, video: dict, viewers: int, procs: int, ramp: float) -> None:
        self.viewers, self.procs, self.ramp = viewers, procs, ramp
        self.video_id = video["id"]
        self.edge_port = edge_port(video["playback_url"], reel)
        self.edge = f"http://127.0.0.1:{self.edge_port}"
        ingest = reel.url(22)
        with urllib.request.urlopen(f"{ingest}/live/{self.video_id}/master.m3u8", timeout=10) as resp:  # noqa: S310
            master = resp.read().decode()
        self.renditions = re.findall(r"^(v\d+)/index.m3u8$", master, re.M)
        every = list(dict.fromkeys(re.findall(r"(\w+)/index\.m3u8", master)))  # audio too
        edge_pid = next(pid for pid in children(reel.proc.pid) if f"--port={self.edge_port}" in cmdline(pid))
        pids = [edge_pid, *children(edge_pid)]
        self.window = EdgeWindow(self.edge, pids, ingest, self.video_id, every)
        self.children: list[subprocess.Popen] = []
        self.edge_seen: dict[str, dict] = {}
        self.viewers_seen: dict = {}
        self.started = 0.0

    def around(self, name: str, starting: bool) -> None:
        if name not in ("reel LL-HLS", LOADED):
            return
        if starting and name == LOADED:
            since = time.time() + self.ramp + 3
            self.started = time.monotonic()
            self.children = llviewers.spread(
                "127.0.0.1", self.edge_port, self.viewers, self.procs, llviewers.Window(since, since + 3600),
                self.ramp, self.video_id, self.renditions, nice=10)
            time.sleep(max(0.0, since - time.time()))
            print(f"{self.viewers} simulated viewers on {self.edge} ({', '.join(self.renditions)})",
                  flush=True)
        if starting:
            self.window.start()
        else:
            if name == LOADED:  # first: a loaded edge's workers may not all answer /metrics in time
                self.viewers_seen = self.stop()
            self.edge_seen[name] = self.window.stop()

    def stop(self) -> dict:
        for child in self.children:
            if child.poll() is None:
                child.terminate()  # the viewers finish the request they are in and report
        try:
            return llviewers.collect(self.children, 60) if self.children else {}
        except (subprocess.TimeoutExpired, ValueError):
            for child in self.children:
                child.kill()
            return {}
        finally:
            self.children = []

    def report(self, results: dict[str, dict]) -> None:
        print(f"\n--load {self.viewers}: the LL-HLS player alone, then beside {self.viewers} simulated "
              f"LL-HLS viewers of the same stream on the same edge ({self.edge})")
        lat = {name: [ms / 1000 for ms in results[name]["samples"]] for name in ("reel LL-HLS", LOADED)
               if results.get(name, {}).get("samples")}
        for name, seen in self.edge_seen.items():
            per, held = seen["parts"] or 1, seen.get("blocking_playlist", 0)
            (p50, n), (p99, _) = seen["lag"]
            print(f"  [{name}] edge upstream requests per part per rendition: part "
                  f"{seen.get('part', 0) / per:.2f}, blocking reload {held / per:.2f} "
                  f"({seen['parts']} parts made over {seen['renditions']} renditions); fan-out lag p50 <= "
                  f"{p50 * 1000:g} ms, p99 <= {p99 * 1000:g} ms over {n} waiters; edge CPU "
                  f"{seen['cpu'] / seen['wall']:.2f} s/s")
        v = self.viewers_seen
        if v:
            minutes = self.viewers * max(v["seconds"], 1) / 60
            print(f"  simulated viewers: {v['answers']} parts answered ({v['audio_answers']} audio), "
                  f"latency (part received - its end "
                  f"by PDT) p50 {percentile(v['latency'], 0.5) * 1000:.0f} ms p99 "
                  f"{percentile(v['latency'], 0.99) * 1000:.0f} ms, stalls {v['stalls']} "
                  f"({v['stalls'] / minutes:.3f} per viewer-minute), failures {len(v['failures'])} "
                  f"{sorted(set(map(str, v['failures'])))[:5]}; their {v['procs']} processes used "
                  f"{v['cpu'] / max(v['seconds'], 1):.2f} CPU s/s, event loops late p99 "
                  f"{v['loop_lag_p99'] * 1000:.0f} ms") if v["latency"] else print(
                f"  simulated viewers: no part answered, failures {v['failures'][:5]}")
        if v and LOADED in self.edge_seen:
            keys = len(v["answered"])
            print(f"  edge blocking reloads upstream per distinct reload answered to the simulated viewers: "
                  f"{self.edge_seen[LOADED].get('blocking_playlist', 0) / max(keys, 1):.2f} ({keys} keys)")
        if len(lat) == 2:
            quiet, loaded = lat["reel LL-HLS"], lat[LOADED]
            d50 = statistics.median(loaded) - statistics.median(quiet)
            d90 = percentile(loaded, 0.9) - percentile(quiet, 0.9)
            print(f"  real player glass-to-glass: alone p50 {statistics.median(quiet):.2f} s p90 "
                  f"{percentile(quiet, 0.9):.2f} s; under load p50 {statistics.median(loaded):.2f} s p90 "
                  f"{percentile(loaded, 0.9):.2f} s; difference p50 {d50:+.2f} s p90 {d90:+.2f} s "
                  f"(target: p50 within 0.3 s: {'met' if abs(d50) <= 0.3 else 'NOT met'}); stalls alone "
                  f"{results['reel LL-HLS']['waiting']}, under load {results[LOADED]['waiting']}")


def edge_port(playback_url: str, reel: Reel) -> int:
    """The edge geo sends this machine's viewers to (its 302), else the first region's."""
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object) -> None:
            return None

    try:
        urllib.request.build_opener(NoRedirect).open(playback_url, timeout=10)
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location", "")
        if exc.code in (301, 302, 307) and (port := urllib.parse.urlsplit(location).port):
            return port
    return reel.port_base + 10


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="recording time per player")
    parser.add_argument("--bitrate", type=int, default=3000, help="publisher's video kb/s")
    parser.add_argument("--preset", default="ultrafast",
                        help="the publisher's x264 preset (it stands in for a camera's hardware "
                             "encoder: its CPU is not what is measured)")
    parser.add_argument("--players", default="ll,hls,nginx",
                        help="which of ll (reel LL-HLS), hls (reel plain HLS), nginx to play")
    parser.add_argument("--ll-config", default=json.dumps(WATCH_PAGE),
                        help="hls.js settings for the reel LL-HLS players, as JSON (by default "
                             "those of reel's watch page, control/static/app/player.js; '{}' for "
                             "hls.js's own)")
    parser.add_argument("--together", action="store_true",
                        help="play the three at once (default: one after the other, so the players' "
                             "decoding does not take the CPU the ladder needs)")
    parser.add_argument("--load", type=int, default=0, metavar="N",
                        help="then play the LL-HLS player again while N simulated LL-HLS viewers "
                             "(loadtest/llviewers.py) read the same stream through the same edge, "
                             "and print the difference")
    parser.add_argument("--load-procs", type=int, default=2, help="processes the simulated viewers run in")
    parser.add_argument("--load-ramp", type=float, default=10.0, help="seconds over which they join")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    if args.load and (args.together or "ll" not in args.players.split(",")):
        parser.error("--load needs the ll player, one after the other")
    for need in ("nginx", "ffmpeg", "node"):
        if not shutil.which(need):
            raise SystemExit(f"{need} is missing")
    if not NGINX_RTMP.exists():
        raise SystemExit(f"{NGINX_RTMP} is missing: apt-get install libnginx-mod-rtmp")
    workdir = Path(tempfile.mkdtemp(prefix="bench-live-"))
    procs = Processes(workdir)
    publisher = None
    try:
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
              f"({os.cpu_count()} CPUs)", flush=True)
        rtmp_port, nginx_http = free_port(), free_port()
        nginx_rtmp(procs, rtmp_port, nginx_http)
        reel = start_reel(procs)
        created = create_stream(reel)
        video = created["video"]
        publisher = Publisher(procs, [created["ingest"]["rtmp"], f"rtmp://127.0.0.1:{rtmp_port}/live/bench"],
                              args.bitrate, args.preset)
        deadline = time.monotonic() + BOUND
        while call("GET", f"{reel.url(1)}/api/v1/videos/{video['id']}")[1].get("state") != "live":
            if time.monotonic() > deadline or publisher.proc.poll() is not None:
                raise SystemExit("the reel stream never went live:\n" + procs.log("publisher"))
            time.sleep(0.5)
        video = call("GET", f"{reel.url(1)}/api/v1/videos/{video['id']}")[1]
        nginx_src = f"http://127.0.0.1:{nginx_http}/hls/bench.m3u8"
        print(f"reel {video['playback_url']}\nnginx-rtmp {nginx_src}", flush=True)
        print(f"warm-up: {settle(reel.url(22), video['id']):.0f} s until the ladder settled", flush=True)
        ingest = reel.ingest_pid()
        nginx_pids = [int((workdir / "nginx" / "nginx.pid").read_text()), *children(
            int((workdir / "nginx" / "nginx.pid").read_text()))]
        ll_config = json.loads(args.ll_config)
        players = {name: player for name, player in {
            "reel LL-HLS": (video["playback_url"], {"lowLatencyMode": True, **ll_config}),
            "reel HLS": (video["playback_url"], {"lowLatencyMode": False}),
            "nginx-rtmp HLS": (nginx_src, {}),
            # The same stream straight from the ingest's memory: no geo, edge nor origin between.
            "reel LL-HLS at ingest": (f"{reel.url(22)}/live/{video['id']}/master.m3u8",
                                      {"lowLatencyMode": True, **ll_config}),
        }.items() if PLAYERS[name] in args.players.split(",")}
        load = Load(reel, video, args.load, args.load_procs, args.load_ramp) if args.load else None
        if load:
            # Both LL-HLS players read the very edge the simulated viewers load (geo's steering
            # could move a player to the other region's edge).
            _, config = players["reel LL-HLS"]
            players["reel LL-HLS"] = players[LOADED] = (f"{load.edge}/live/{video['id']}/master.m3u8", config)
        marks: dict[str, float] = {}

        def on_start() -> None:  # CPU is counted from the first player's recording to the end
            if not marks:
                marks["wall"] = time.monotonic()
                marks["ingest"] = cpu_seconds(ingest)
                marks["publisher"] = publisher.cpu()
                marks["nginx"] = sum(cpu_seconds(pid) for pid in nginx_pids)

        try:
            results = watch(players, args.seconds, args.together, on_start,
                            load.around if load else lambda name, starting: None)
        finally:
            if load:
                load.stop()
        wall = time.monotonic() - marks["wall"]
        cpu = {"reel ingest+ladder": cpu_seconds(ingest) - marks["ingest"],
               "publisher (x264, relays)": publisher.cpu() - marks["publisher"],
               "nginx-rtmp": sum(cpu_seconds(pid) for pid in nginx_pids) - marks["nginx"]}
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print("reel ingest: " + ladder_state(reel.url(22), video["id"]))
        report(results, cpu, wall, publisher.stop())
        if load:
            load.report(results)
        if args.keep:
            (workdir / "results.json").write_text(json.dumps(results))
    finally:
        if publisher:
            publisher.stop()
        procs.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
