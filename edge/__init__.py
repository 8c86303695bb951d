"""edge: a regional caching tier — byte-bounded LRU, coalesced upstream fetches, failover."""

from edge.app import make_app

__all__ = ["make_app"]
