"""The cache's TinyLFU admission, on its own: which objects a full cache keeps."""

from __future__ import annotations

from edge.cache import Cache, Entry, Frequency, Policy

KEEP = Policy(True, 3600.0)


def entry(size: int) -> Entry:
    return Entry(200, (), bytes(size), 0.0, KEEP)


def ask(cache: Cache, key: str, size: int) -> bool:
    """What the edge does for a request: count it, and on a miss store what the origin sent.
    True for a hit."""
    cache.seen(key)
    if cache.get(key) is not None:
        return True
    cache.put(key, entry(size))
    return False


def test_a_scan_of_one_hit_wonders_does_not_flush_the_popular_set():
    cache = Cache(1_000_000)
    popular = [f"hot/{i}" for i in range(5)]
    for _ in range(3):
        for key in popular:
            ask(cache, key, 100_000)
    for i in range(200):  # twice the cache in objects asked for once
        assert not ask(cache, f"scan/{i}", 100_000)
    assert all(ask(cache, key, 100_000) for key in popular)
    assert cache.bytes <= cache.max_bytes


def test_a_newly_popular_object_gets_in():
    cache = Cache(1_000_000)
    for i in range(9):
        for _ in range(2):
            ask(cache, f"old/{i}", 100_000)
    assert len(cache) == 9
    verdicts = [ask(cache, "new", 200_000) for _ in range(5)]
    assert verdicts[0] is False and verdicts[-1] is True
    assert "new" in cache and len(cache) < 10
    assert cache.bytes <= cache.max_bytes


def test_admission_weighs_bytes_not_just_counts():
    # Ten small objects asked for three times each fill the cache.
    cache = Cache(1_100_000)
    small = [f"playlist/{i}" for i in range(10)]
    for _ in range(3):
        for key in small:
            ask(cache, key, 100_000)
    assert len(cache) == 10
    # A segment that would push out three of them gets in only once its count times its size
    # outweighs theirs: asked for twice, 2 x 350 kB < 3 x 3 x 100 kB; three times, it wins.
    assert [ask(cache, "segment", 350_000) for _ in range(5)] == [False, False, False, True, True]
    assert sum(key in cache for key in small) == 7


def test_a_prefetch_is_admitted_without_a_contest():
    cache = Cache(300_000)
    for i in range(2):
        for _ in range(4):
            ask(cache, f"hot/{i}", 140_000)
    assert cache.put("next", entry(140_000), admit=True)
    assert "next" in cache and cache.bytes <= cache.max_bytes


def test_frequency_counts_after_the_doorkeeper_and_fades():
    frequency = Frequency(1024)
    assert frequency.estimate("hot") == 0
    frequency.add("hot")
    assert frequency.estimate("hot") == 1  # the doorkeeper's bit only
    for _ in range(7):
        frequency.add("hot")
    assert frequency.estimate("hot") == 8
    for _ in range(30):
        frequency.add("hot")
    assert frequency.estimate("hot") == 16  # counters saturate at 15, plus the doorkeeper
    # A full sample period of other requests halves every counter and empties the doorkeeper.
    for _ in range(10 * 1024):
        frequency.add("other")
    assert frequency.estimate("hot") <= 8
    assert frequency.estimate("hot") >= 1


def test_the_least_recently_used_goes_first_and_peeking_does_not_count_as_use():
    evicted: list[str] = []
    cache = Cache(3 * entry(100_000).size, on_evict=lambda key, _: evicted.append(key))
    for key in ("a", "b", "c"):
        cache.put(key, entry(100_000), admit=True)
    cache.get("a")  # used: "b" is now the least recently used
    cache.peek("b")  # looked at, not used
    cache.put("d", entry(100_000), admit=True)
    assert evicted == ["b"]
    assert [key in cache for key in "abcd"] == [True, False, True, True]
    assert cache.bytes == 3 * entry(100_000).size
    cache.pop("a")
    assert cache.bytes == 2 * entry(100_000).size and len(cache) == 2
