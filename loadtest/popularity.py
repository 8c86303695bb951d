"""Which video a viewer picks: a finite catalog with Zipf popularity, and the celebrity hotspot.

The catalog file is what `loadtest.seed` writes: {"videos": [ids...]}. Its last video is the
"new" one the hotspot suite makes famous; until the spike it is nobody's pick. Ranks are a fixed
shuffle of the catalog (`seed`), the same in every worker.
"""

from __future__ import annotations

import bisect
import itertools
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path

# Titles and tags of seeded videos, and what API viewers search for.
WORDS = ("ocean", "tiger", "guitar", "recipe", "travel", "football", "piano", "sunset",
         "mountain", "robot", "coffee", "dance", "history", "chess", "garden", "rocket",
         "jazz", "city", "winter", "puzzle", "comedy", "science", "yoga", "bridge")


class Zipf:
    """P(rank k) proportional to 1 / k^exponent, for k = 1..n."""

    def __init__(self, n: int, exponent: float) -> None:
        if n < 1:
            raise ValueError("a Zipf catalog needs at least one item")
        self.cumulative = list(itertools.accumulate(1.0 / k**exponent for k in range(1, n + 1)))

    def rank(self, rng: random.Random) -> int:
        """A 0-based rank."""
        return bisect.bisect(self.cumulative, rng.random() * self.cumulative[-1])


@dataclass(frozen=True)
class Hotspot:
    """The celebrity post: `share` of all new views go to the hot video from `at` seconds after
    the start (reached within `rise` seconds), halving every `half_life` seconds after."""

    at: float = math.inf
    share: float = 0.0
    rise: float = 2.0
    half_life: float = 30.0

    def share_at(self, t: float) -> float:
        if t < self.at:
            return 0.0
        since = t - self.at
        if since < self.rise:
            return self.share * since / self.rise
        return self.share * 0.5 ** ((since - self.rise) / self.half_life)


class Catalog:
    def __init__(self, videos: list[str], exponent: float = 1.1, seed: int = 7) -> None:
        if not videos:
            raise ValueError("the catalog is empty: seed one with `reel loadtest seed`")
        self.videos = list(videos)
        self.exponent = exponent
        self.hot: str | None = None
        self.steady = list(videos)
        random.Random(seed).shuffle(self.steady)
        self.zipf = Zipf(len(self.steady), exponent)
        self.hotspot = Hotspot()
        # Bearer tokens of viewers signed in before the test (`reel loadtest seed --viewers`).
        self.viewers: list[str] = []
        self._handed = 0

    def viewer(self) -> str | None:
        """The next signed-in viewer's token (round the list), or None when none were seeded."""
        if not self.viewers:
            return None
        self._handed += 1
        return self.viewers[self._handed % len(self.viewers)]

    def make_hot(self, hotspot: Hotspot) -> None:
        """The last video becomes the celebrity's new post: no one's pick until `hotspot.at`."""
        if len(self.videos) < 2:
            raise ValueError("the hotspot needs a catalog of two videos or more")
        self.hot, self.hotspot = self.videos[-1], hotspot
        self.steady = [v for v in self.steady if v != self.hot]
        self.zipf = Zipf(len(self.steady), self.exponent)

    @classmethod
    def load(cls, path: str | None, ids: str | None, **kw: object) -> Catalog:
        if ids:
            return cls([v for v in ids.split(",") if v], **kw)  # type: ignore[arg-type]
        if not path:
            raise ValueError("give --catalog FILE (from `reel loadtest seed`) or --videos ID,ID")
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"cannot read the catalog {path}: {exc}") from None
        catalog = cls(list(data["videos"]), **kw)  # type: ignore[arg-type]
        catalog.viewers = [str(t) for t in data.get("viewers", ())]
        # Each Locust process starts handing them out somewhere else: distinct viewers per user.
        catalog._handed = random.randrange(max(1, len(catalog.viewers)))
        return catalog

    def pick(self, rng: random.Random, t: float) -> str:
        """A video for a view starting `t` seconds into the test."""
        if self.hot is not None and rng.random() < self.hotspot.share_at(t):
            return self.hot
        return self.steady[self.zipf.rank(rng)]

    def describe(self) -> dict[str, object]:
        return {"videos": len(self.steady) + (self.hot is not None), "hot": self.hot,
                "hotspot": asdict(self.hotspot)}
