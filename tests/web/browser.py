"""What every web test does in the browser: watch the console, run axe-core, sign in, screenshot."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, BrowserContext, Page

AXE = Path(__file__).parents[2] / "node_modules" / "axe-core" / "axe.min.js"
DESKTOP = {"width": 1366, "height": 860}
PHONE = {"width": 360, "height": 740}
VIEWPORTS = {"desktop": DESKTOP, "phone": PHONE}
SHOTS = Path(os.environ.get("REEL_WEB_SCREENSHOTS", "/tmp/reel-web-screenshots"))


@dataclass
class Console:
    """Console errors and uncaught exceptions of a page; `ignored` are expected ones."""

    errors: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", lambda m: self.errors.append(f"{page.url}: {m.text}")
                if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"{page.url}: {e}"))

    def assert_clean(self, *allowed: str) -> None:
        left = [e for e in self.errors if not any(re.search(a, e) for a in allowed)]
        assert not left, "console errors:\n" + "\n".join(left)


@contextmanager
def context(browser: Browser, viewport: str = "desktop", *,
            mobile: bool = False) -> Iterator[tuple[BrowserContext, Console]]:
    """A fresh browser profile (no session) at `viewport`, its console watched and checked."""
    ctx = browser.new_context(viewport=VIEWPORTS[viewport], is_mobile=mobile or viewport == "phone",
                              has_touch=viewport == "phone")
    console = Console()
    ctx.on("page", console.watch)
    try:
        yield ctx, console
    finally:
        ctx.close()


def axe_violations(page: Page) -> list[dict]:
    """axe-core's serious and critical violations on the page as it is now."""
    if not page.evaluate("() => !!window.axe"):
        page.add_script_tag(path=str(AXE))
    result = page.evaluate("() => axe.run(document, {resultTypes: ['violations']})")
    return [{"id": v["id"], "impact": v["impact"], "help": v["help"],
             "nodes": [n["target"] for n in v["nodes"]][:5]}
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def assert_accessible(page: Page) -> None:
    bad = axe_violations(page)
    assert not bad, f"axe on {page.url}:\n" + json.dumps(bad, indent=1)


def screenshot(page: Page, name: str, *, full_page: bool = True) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def sign_in_as(page: Page, base: str, session: dict) -> None:
    """Put an API session (from POST /api/v1/sessions) where the pages keep it, as signing in
    through the form does."""
    page.goto(base + "/signin")
    page.evaluate("s => reel.save(s)", session)
