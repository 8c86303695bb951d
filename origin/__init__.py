"""origin: the object store and the HTTP app that serves it by the layout of DESIGN.md.

Stores: a directory (`origin.dirstore.DirectoryStore`, the default) or S3 and any S3-compatible
server (`origin.s3store.S3Store`, `--store s3://BUCKET/PREFIX`), both behind the interface of
`origin.base`; `origin.store.open_store` takes either form. The HTTP app is `origin.app`: importing
`origin` (or `origin.layout`, `origin.store`) does not load it.

Regions: origins in every region serve the same keys by reading the same bucket (on one machine,
the same directory), not by pulling through from a peer on a miss. One source of truth: a
video deleted or re-published is so everywhere at once, with no second copy to expire or purge
and no origin-to-origin traffic or failure mode; every origin answers the same ETag and
Last-Modified, so an edge in any region revalidates against any origin. At scale the provider
does the copying (S3 cross-region replication or multi-region access points), close to each
region's origins.
"""

from origin.layout import Key, parse_key
from origin.store import DirectoryStore, ObjectInfo, Store, open_store

__all__ = ["Key", "parse_key", "DirectoryStore", "ObjectInfo", "Store", "open_store"]
