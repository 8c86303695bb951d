"""Why ingest lets a publisher go: one exception, one reason, one log line."""

from __future__ import annotations


class CutOff(Exception):
    """A publisher (or would-be publisher) is refused or cut off. `reason` is a short fixed word
    (the metrics label and the log line's `reason`); `detail` adds what helps an operator."""

    def __init__(self, reason: str, **detail: object) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
