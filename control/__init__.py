"""control: the creators' and viewers' API (uploads, videos, the packaging job queue).

The app is `control.app.make_app`; `reel control` is wired in `control.cli`. Importing `control`
loads neither.
"""
