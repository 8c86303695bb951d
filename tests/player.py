"""hls.js in headless Chromium: the player most of reel's viewers use."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
HLSJS = Path(__file__).parents[1] / "node_modules" / "hls.js" / "dist" / "hls.min.js"

# A bare page for playing any URL: the same hooks the watch page exposes.
PAGE = """<!doctype html><meta charset=utf-8><video muted playsinline></video>
<script src="hls.min.js"></script><script>
window.hlsErrors = []; window.playedLevels = [];
const hls = new Hls(JSON.parse(new URLSearchParams(location.search).get("config") || "{}"));
window.hls = hls;
hls.on(Hls.Events.ERROR, (e, d) => window.hlsErrors.push({type: d.type, details: d.details, fatal: d.fatal}));
hls.on(Hls.Events.FRAG_CHANGED, (e, d) => window.playedLevels.push(d.frag.level));
hls.loadSource(new URLSearchParams(location.search).get("src"));
hls.attachMedia(document.querySelector("video"));
</script>"""


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class _PlayerPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        path = self.path.partition("?")[0]
        if path == "/hls.min.js":
            body, kind = HLSJS.read_bytes(), "text/javascript"
        elif path == "/":
            body, kind = PAGE.encode(), "text/html"
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def player_page() -> Iterator[str]:
    """The bare player PAGE served from a real loopback server; yields its URL (add
    `?src=MASTER`, and `&config=JSON` for hls.js). A page Playwright fulfils itself counts as
    public to Chromium, which then refuses its requests to other loopback ports (Local Network
    Access); a page from a loopback server may make them."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _PlayerPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def start_playing(page: Page, player: str, src: str, config: dict, *, levels: int = 1,
                  timeout: float = 60_000) -> None:
    """Open the bare player (`player`: player_page's URL) on `src` with hls.js `config`, wait for
    `levels` renditions and start muted playback."""
    page.goto(f"{player}?src={quote(src)}&config={quote(json.dumps(config))}")
    page.wait_for_function(f"() => window.hls && window.hls.levels.length >= {levels}",
                           timeout=timeout)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")


def _now(page: Page) -> float:
    return page.evaluate("() => document.querySelector('video').currentTime")


def play_with_switch(page: Page, until: float = 8.0, min_levels: int = 3) -> dict:
    """Play from the start, force a switch to another rendition, play to `until` seconds.

    Returns what hls.js saw: errors (every one, fatal or not) and the levels actually played.
    """
    page.wait_for_function(f"() => window.hls && window.hls.levels.length >= {min_levels}",
                           timeout=30_000)
    page.evaluate("() => { const v = document.querySelector('video'); v.muted = true; v.play(); }")
    page.wait_for_function("() => document.querySelector('video').currentTime > 1.5", timeout=30_000)
    before = _now(page)
    if min_levels > 1:
        page.evaluate("""() => {
            const now = window.hls.currentLevel;
            window.hls.currentLevel = now === 0 ? window.hls.levels.length - 1 : 0;
        }""")
    wanted = 2 if min_levels > 1 else 1
    page.wait_for_function(
        f"() => new Set(window.playedLevels).size >= {wanted}"
        f" && document.querySelector('video').currentTime > {until}",
        timeout=60_000,
    )
    return {
        "advanced": _now(page) - before,
        "errors": page.evaluate("() => window.hlsErrors"),
        "played": page.evaluate("() => [...new Set(window.playedLevels)]"),
        "media_error": page.evaluate("() => document.querySelector('video').error"),
        "buffered_start": page.evaluate(
            "() => document.querySelector('video').buffered.start(0)"),
        "buffered": page.evaluate("""() => { const b = document.querySelector('video').buffered;
            return [...Array(b.length).keys()].map(i => [b.start(i), b.end(i)]); }"""),
    }
