"""The typed reasons a packaging job fails with: what an uploader is told."""

from __future__ import annotations


class PackagingError(Exception):
    """Packaging failed for a reason the uploader should see. `reason` is a short typed code:

    empty_input, unreadable_input, not_a_video, no_media, still_image, truncated, too_long,
    too_large, resolution_too_high, corrupt_input, no_frames, timeout.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
