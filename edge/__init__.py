"""edge: a regional caching tier — byte-bounded LRU, coalesced upstream fetches streamed to every
waiter, stale serving, failover, shield tier, prefetch and purge.

The app is `edge.app.make_app`, served by `edge.server`; its origins come from
`edge.upstream.origins_nearest`; `reel edge` is wired in `edge.cli`. Importing `edge` loads none
of them.
"""
