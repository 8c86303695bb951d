"""The bitrate ladder is data: rungs after Apple's HLS authoring ladder, chosen from the source."""

from __future__ import annotations

from dataclasses import dataclass

REORDER_FRAMES = 2  # x264's B-frame pyramid delays presentation by two pictures at most


@dataclass(frozen=True)
class Rung:
    name: str  # rendition directory, e.g. "v720"
    height: int
    kbps: int  # target average video bitrate
    profile: str = "high"
    peak_ratio: float = 1.5  # VBV peak over the average, so segments stay near BANDWIDTH
    buffer_seconds: float = 2.0  # VBV buffer, in seconds at the peak rate

    @property
    def maxrate_kbps(self) -> int:
        return int(self.kbps * self.peak_ratio)

    def x264_options(self, preset: str) -> dict[str, str]:
        return {
            "preset": preset,
            "profile": self.profile,
            "maxrate": f"{self.maxrate_kbps}k",
            "bufsize": f"{int(self.maxrate_kbps * self.buffer_seconds)}k",
            "forced-idr": "1",
            # Keyframes only where the pipeline forces them (segment starts, identical in every
            # rendition); B-frames at most REORDER_FRAMES deep, which the timeline leaves room for.
            "x264-params": "keyint=infinite:scenecut=0:open-gop=0:b-pyramid=normal",
        }


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
