"""origin: the object store and the HTTP app that serves it by the layout of DESIGN.md."""

from origin.app import make_app
from origin.layout import Key, parse_key
from origin.store import DirectoryStore, ObjectInfo, Store, open_store

__all__ = ["Key", "parse_key", "DirectoryStore", "ObjectInfo", "Store", "open_store", "make_app"]
