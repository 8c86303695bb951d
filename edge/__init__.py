"""edge: a regional caching tier — byte-bounded LRU, coalesced upstream fetches streamed to every
waiter, stale serving, failover, shield tier, prefetch and purge."""

from edge.app import make_app
from edge.upstream import ConfigError, origins_nearest

__all__ = ["ConfigError", "make_app", "origins_nearest"]
