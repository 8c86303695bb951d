"""The view path's in-process cache: bounded, short-lived, and never keeps a read older than a
change made in this process."""

from __future__ import annotations

from control.hotcache import TtlCache


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_are_bounded() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(1.0, max_entries=2, clock=clock)
    for key, value in (("a", 1), ("b", 2), ("c", 3)):
        cache.put(key, value)
    assert (cache.get("a"), cache.get("b"), cache.get("c"), len(cache)) == (None, 2, 3, 2)
    clock.now = 1.0
    assert cache.get("b") is None and len(cache) == 1


def test_a_read_from_before_a_discard_is_not_cached() -> None:
    cache: TtlCache[str, str] = TtlCache(1.0, max_entries=10, clock=Clock())
    read_at = cache.generation  # a database read starts
    cache.discard("token")  # meanwhile this process signs the token out
    cache.put("token", "user", read_at)  # the read ends: its answer is older than the sign-out
    assert cache.get("token") is None
    cache.put("token", "user", cache.generation)
    assert cache.get("token") == "user"


def test_refresh_keeps_the_entry_lifetime() -> None:
    clock = Clock()
    cache: TtlCache[str, int] = TtlCache(1.0, max_entries=10, clock=clock)
    cache.put("video", 1)
    clock.now = 0.5
    cache.refresh("video", 2)
    cache.refresh("absent", 3)
    assert (cache.get("video"), cache.get("absent")) == (2, None)
    clock.now = 1.0
    assert cache.get("video") is None
