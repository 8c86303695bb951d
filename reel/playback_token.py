"""Playback tokens: signed, expiring permission to fetch one video's objects (DESIGN.md, "Private
and unlisted videos"). Pure standard library, so every service that checks them (origin, edge,
geo) and control, which signs them, share one implementation.

A token is `{key id}.{expiry}.{signature}` or `{key id}.{expiry}.{signature}.{binding}`:

- key id: which key of the ring signed it (`[A-Za-z0-9_-]{1,16}`); several are valid at once, so
  keys rotate (add a key, sign with it, retire the old one later) without breaking playback;
- expiry: Unix seconds, base 36;
- signature: HMAC-SHA256 over (key id, video id, expiry, binding), first 16 bytes, base64url;
- binding (optional): `r-REGION` (the edge's region) or `a-ADDRESS` (the client's IPv4/IPv6
  address, `:` written `_`, optionally `-N` prefix length for a network).

It travels as one path segment, `~{token}`, right after the video id:
`/vod/{id}/~{token}/master.m3u8`, so every relative URI of the playlists (renditions, init,
segments, I-frame playlists, thumbnails) resolves under the same token with no rewriting.
Servers strip it (`split_path`) before resolving the object key; the cache key and the access
logs never include it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

MARK = "~"
ACCESS_HEADER = "X-Reel-Access"  # private | unlisted | unknown: the requester needs a token
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_TOKEN = re.compile(
    r"([A-Za-z0-9_-]{1,16})\.([0-9a-z]{1,12})\.([A-Za-z0-9_-]{22})(?:\.([A-Za-z0-9_.-]{1,64}))?"
)
# /{vod|live}/{id}/~{token}/rest: the token segment right after the video id.
_TOKEN_PATH = re.compile(r"(/(?:vod|live)/[A-Za-z0-9_-]{6,64}/)~([A-Za-z0-9_.-]{1,160})/")
_SIGNATURE_BYTES = 16
KEYS_HELP = "playback token key ring: a JSON file (re-read when it changes) or the JSON itself"


class KeyRingError(ValueError):
    """The key ring file or value is not usable."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def split_path(path: str) -> tuple[str, str | None]:
    """(`path` without its token segment, the token) — the token is None when there is none."""
    if MARK not in path:
        return path, None
    match = _TOKEN_PATH.match(path)
    if match is None:
        return path, None
    return match.group(1) + path[match.end():], match.group(2)


def redact(path: str) -> str:
    """`path` as an access log may show it: without its token."""
    return split_path(path)[0]


def token_path(path: str, token: str) -> str:
    """`path` (`/vod/{id}/...`) with `token` as the segment after the video id."""
    parts = path.split("/", 3)  # "", "vod", id, rest
    return f"/{parts[1]}/{parts[2]}/{MARK}{token}/{parts[3]}"


@dataclass(frozen=True)
class Viewer:
    """What a binding is checked against: the server's region and the client's address. A field
    left None is not checked by this server (geo has no region; an edge checks it)."""

    region: str | None = None
    address: str | None = None


class KeyRing:
    """Key id -> secret, and the id new tokens are signed with. `load` re-reads a ring file when
    it changed (at most once a second), so rotating keys needs no restart."""

    def __init__(self, keys: dict[str, bytes], signing: str, source: Path | None = None) -> None:
        if signing not in keys:
            raise KeyRingError(f"signing key {signing!r} is not in the ring")
        for kid, secret in keys.items():
            if not _KEY_ID.fullmatch(kid) or len(secret) < 16:
                raise KeyRingError(f"key {kid!r}: ids are [A-Za-z0-9_-]{{1,16}}, secrets 16+ bytes")
        self.keys, self.signing, self.source = dict(keys), signing, source
        self._checked = time.monotonic()
        self._mtime = source.stat().st_mtime_ns if source is not None else 0

    # -- loading -----------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str, source: Path | None = None) -> KeyRing:
        """A ring from JSON: {"sign": "k2", "keys": {"k1": "<base64url secret>", "k2": "..."}}."""
        try:
            doc = json.loads(text)
            keys = {kid: base64.urlsafe_b64decode(secret + "=" * (-len(secret) % 4))
                    for kid, secret in doc["keys"].items()}
            return cls(keys, doc["sign"], source)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise KeyRingError(f"not a key ring: {exc}") from None

    @classmethod
    def load(cls, spec: str) -> KeyRing:
        """A ring from a file path, or the JSON itself (a value starting with `{`)."""
        if spec.lstrip().startswith("{"):
            return cls.parse(spec)
        path = Path(spec)
        try:
            return cls.parse(path.read_text(), path)
        except OSError as exc:
            raise KeyRingError(f"cannot read key ring {spec}: {exc.strerror}") from None

    @staticmethod
    def generate(kid: str = "k1") -> dict[str, object]:
        """A new ring document with one random key."""
        return {"sign": kid, "keys": {kid: _b64(secrets.token_bytes(32))}}

    def refresh(self) -> None:
        """Re-read the ring file if it changed (checked at most once a second)."""
        now = time.monotonic()
        if self.source is None or now - self._checked < 1.0:
            return
        self._checked = now
        try:
            mtime = self.source.stat().st_mtime_ns
            if mtime == self._mtime:
                return
            fresh = KeyRing.parse(self.source.read_text(), self.source)
        except (OSError, KeyRingError):
            return  # a ring being rewritten: keep the one we have
        self.keys, self.signing, self._mtime = fresh.keys, fresh.signing, mtime

    # -- signing and checking -----------------------------------------------------------------

    def _mac(self, kid: str, video_id: str, expires: int, binding: str) -> str:
        message = f"{kid}\n{video_id}\n{expires}\n{binding}".encode()
        return _b64(hmac.new(self.keys[kid], message, hashlib.sha256).digest()[:_SIGNATURE_BYTES])

    def sign(self, video_id: str, ttl: float, *, binding: str = "", now: float | None = None) -> str:
        """A token for `video_id` valid `ttl` seconds; `binding` from `bind_region`/`bind_address`."""
        self.refresh()
        expires = int((time.time() if now is None else now) + ttl)
        token = f"{self.signing}.{_base36(expires)}.{self._mac(self.signing, video_id, expires, binding)}"
        return f"{token}.{binding}" if binding else token

    def verify(
        self, token: str, video_id: str, viewer: Viewer | None = None, now: float | None = None
    ) -> bool:
        """Whether `token` lets its bearer fetch `video_id`'s objects now (constant-time compare)."""
        match = _TOKEN.fullmatch(token)
        if match is None:
            return False
        kid, expiry, signature, binding = match.groups()
        self.refresh()
        if kid not in self.keys:
            return False
        expires = int(expiry, 36)
        if expires < (time.time() if now is None else now):
            return False
        if not hmac.compare_digest(signature, self._mac(kid, video_id, expires, binding or "")):
            return False
        return binding is None or (viewer is not None and _bound(binding, viewer))


def bind_region(region: str) -> str:
    return f"r-{region}"


def bind_address(address: str, prefix: int | None = None) -> str:
    """A binding to one client address, or to its network when `prefix` is given."""
    ip = ipaddress.ip_address(address)
    text = str(ip).replace(":", "_")
    return f"a-{text}" if prefix is None else f"a-{text}-{prefix}"


def _bound(binding: str, viewer: Viewer) -> bool:
    kind, _, value = binding.partition("-")
    if kind == "r":
        return viewer.region is None or hmac.compare_digest(value, viewer.region)
    if kind == "a" and viewer.address is None:
        return True
    if kind == "a":
        address, _, prefix = value.replace("_", ":").partition("-")
        try:
            network = ipaddress.ip_network(f"{address}/{prefix}" if prefix else address, strict=False)
            return ipaddress.ip_address(viewer.address) in network
        except ValueError:
            return False
    return False


def _base36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    out = ""
    while True:
        number, rest = divmod(number, 36)
        out = digits[rest] + out
        if not number:
            return out


def load_ring(spec: str | None) -> KeyRing | None:
    """The `--playback-keys` flag's ring (None when the flag is empty); exits on a bad ring."""
    if not spec:
        return None
    try:
        return KeyRing.load(spec)
    except KeyRingError as exc:
        raise SystemExit(f"--playback-keys: {exc}") from None


def write_ring(path: Path) -> Path:
    """Create a ring file at `path` (0600) unless one is there; `reel up` keeps it in DATA."""
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(KeyRing.generate(), out)
    return path
