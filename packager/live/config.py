"""A live stream's settings, and the cadence of parts and segments derived from its frame rate.

Targets, and why:
- **Parts of ~1/3 s** (10 frames at 30 fps). A player holds PART-HOLD-BACK = 3 part targets
  behind the live edge, and glass-to-glass latency is about that plus the encoder and the last
  frame of the part: 3 x 0.35 s ~ 1.05 s + ~0.2 s keeps reel under issue 14's 1.5 s p50, where
  0.5 s parts (1.5 s of hold-back alone) could not. Shorter parts (MediaMTX's 0.2 s) would
  double the requests every viewer makes per second for little gain.
- **Segments of 1 s** (3 parts, one closed GOP each). Players without LL-HLS start HOLD-BACK =
  3 target durations back (RFC 8216bis 4.4.3.8); TARGETDURATION is a whole number of seconds,
  so 1 s segments are the only way to keep plain HLS under 6 s glass-to-glass. The price is an
  IDR a second, a few percent of bitrate at equal quality.
Parts are whole slots of that frame grid (media time, whatever pictures the publisher actually
sent), and a segment is a whole number of parts, so every part of a segment has the same length
and no runt part is left at a segment's end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

from packager.ladder import DEFAULT_LADDER, Rung
from packager.lanes import AAC_FRAME, AUDIO_RATE, VIDEO_TIMESCALE

__all__ = ["AAC_FRAME", "AUDIO_RATE", "MAX_GAP", "VIDEO_TIMESCALE", "Cadence", "LiveConfig",
           "snap_rate"]
COMMON_RATES = (Fraction(24000, 1001), Fraction(24), Fraction(25), Fraction(30000, 1001),
                Fraction(30), Fraction(50), Fraction(60000, 1001), Fraction(60))
# Seconds: pictures or sound missing for longer are a jump of the publisher's clock, taken out,
# not a gap to fill (a frozen picture or silence for minutes would help nobody).
MAX_GAP = 10


@dataclass(frozen=True)
class LiveConfig:
    part_seconds: float = 1 / 3
    segment_seconds: float = 1.0
    dvr_seconds: float = 2 * 3600.0  # the sliding window a viewer can seek back into
    ladder: tuple[Rung, ...] = DEFAULT_LADDER
    max_rungs: int = 3  # real time on one machine: the top three rungs the source allows
    preset: str = "veryfast"
    faster_presets: tuple[str, ...] = ("superfast", "ultrafast")  # degrade steps, in order
    max_lag: float = 1.0  # seconds a picture may take to its encoded sample before we degrade
    min_rungs: int = 1  # degrading never drops the ladder below this many rungs
    # Newest segments whose parts (and bytes) stay in memory: more than the three target
    # durations of parts a playlist lists, so a player a little behind still finds them.
    memory_segments: int = 6
    audio_kbps: int = 128
    hold_back_parts: int = 3
    rung_names: tuple[str, ...] = field(default_factory=tuple)  # only these, when given (tests)


def snap_rate(frame_seconds: float) -> Fraction:
    """The common frame rate nearest a measured frame interval (within 3 %), else the measure
    itself: publishers' millisecond timestamps jitter by a millisecond."""
    measured = 1 / max(frame_seconds, 1e-3)
    best = min(COMMON_RATES, key=lambda r: abs(float(r) - measured))
    if abs(float(best) - measured) <= 0.03 * measured:
        return best
    return Fraction(measured).limit_denominator(1001)


@dataclass(frozen=True)
class Cadence:
    """Frames per part and parts per segment for one frame rate, and the targets playlists
    declare (RFC 8216bis: no part longer than PART-TARGET, no segment rounding above
    TARGETDURATION)."""

    frame_rate: Fraction
    part_frames: int
    segment_parts: int

    @classmethod
    def of(cls, frame_rate: Fraction, config: LiveConfig) -> Cadence:
        part_frames = max(1, round(config.part_seconds * frame_rate))
        part = part_frames / frame_rate
        segment_parts = max(1, round(config.segment_seconds / part))
        return cls(frame_rate, part_frames, segment_parts)

    @property
    def frame_ticks(self) -> float:
        return VIDEO_TIMESCALE / self.frame_rate

    @property
    def part_seconds(self) -> float:
        return float(self.part_frames / self.frame_rate)

    @property
    def segment_seconds(self) -> float:
        return self.part_seconds * self.segment_parts

    @property
    def part_target(self) -> float:
        """Slack over the nominal part: half a frame (millisecond timestamps jitter) or one AAC
        frame (audio parts end on whole frames), as a part may never outlast its target."""
        slack = max(0.5 / float(self.frame_rate), AAC_FRAME / AUDIO_RATE)
        return math.ceil((self.part_seconds + slack) * 1000) / 1000

    @property
    def target_duration(self) -> int:
        # Rounded up from a little under the nominal length: jitter never rounds a segment above.
        return max(1, math.ceil(self.segment_seconds - 0.4))
