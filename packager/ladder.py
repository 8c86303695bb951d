"""The bitrate ladder is data: rungs after Apple's HLS authoring ladder, chosen from the source."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rung:
    name: str  # rendition directory, e.g. "v720"
    height: int
    kbps: int  # target average video bitrate
    profile: str = "high"

    @property
    def maxrate_kbps(self) -> int:
        """Peak constraint (VBV) so segment bitrates stay near the advertised BANDWIDTH."""
        return self.kbps * 3 // 2


DEFAULT_LADDER: tuple[Rung, ...] = (
    Rung("v1080", 1080, 5000),
    Rung("v720", 720, 3000),
    Rung("v480", 480, 1400),
    Rung("v360", 360, 800, "main"),
    Rung("v240", 240, 400, "main"),
    Rung("v144", 144, 200, "main"),  # so even a small upload gets two rungs to switch between
)

AUDIO_KBPS = 128
AUDIO_NAME = f"a{AUDIO_KBPS}"


@dataclass(frozen=True)
class Rendition:
    """A rung fitted to one source: its exact output size."""

    rung: Rung
    width: int
    height: int

    @property
    def name(self) -> str:
        return self.rung.name


def _even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def choose(source_width: int, source_height: int, ladder: tuple[Rung, ...] = DEFAULT_LADDER,
           ) -> list[Rendition]:
    """Rungs no taller than the source (never upscaled), aspect ratio kept, even dimensions.

    The rung height applies to the shorter side, so a 9:16 portrait source gets 720x1280 for the
    "v720" rung, as short-video apps expect. A source smaller than every rung gets one rendition at
    its own size.
    """
    portrait = source_height > source_width
    short_side = source_width if portrait else source_height
    chosen = []
    for rung in ladder:
        if rung.height > short_side:
            continue
        scale = rung.height / short_side
        chosen.append(Rendition(rung, _even(source_width * scale), _even(source_height * scale)))
    if not chosen:
        smallest = min(ladder, key=lambda r: r.height)
        chosen.append(Rendition(smallest, _even(source_width), _even(source_height)))
    return chosen
