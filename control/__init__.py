"""control: the creators' and viewers' API (uploads, videos, the packaging job queue)."""

from control.app import make_app

__all__ = ["make_app"]
