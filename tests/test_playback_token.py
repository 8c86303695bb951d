"""reel.playback_token: signing, checking, key rotation, where the token travels."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from reel.playback_token import (
    KeyRing,
    KeyRingError,
    Viewer,
    bind_address,
    bind_region,
    redact,
    split_path,
    token_path,
)

VIDEO = "abcdef123456"


@pytest.fixture
def ring() -> KeyRing:
    return KeyRing.parse(json.dumps(KeyRing.generate("k1")))


def test_a_token_is_valid_for_its_video_until_it_expires(ring: KeyRing) -> None:
    token = ring.sign(VIDEO, 60)
    assert ring.verify(token, VIDEO)
    assert not ring.verify(token, "otherVideo99")
    assert not ring.verify(token, VIDEO, now=time.time() + 61)
    assert not ring.verify(ring.sign(VIDEO, -1), VIDEO)


def test_an_altered_or_foreign_token_is_refused(ring: KeyRing) -> None:
    token = ring.sign(VIDEO, 60)
    kid, expiry, signature = token.split(".")
    later = int(expiry, 36) + 3600
    assert not ring.verify(f"{kid}.{later:x}.{signature}", VIDEO)  # a longer life
    flipped = signature[:-1] + ("B" if signature.endswith("A") else "A")
    assert not ring.verify(f"{kid}.{expiry}.{flipped}", VIDEO)
    assert not ring.verify(f"k9.{expiry}.{signature}", VIDEO)  # an unknown key id
    other = KeyRing.parse(json.dumps(KeyRing.generate("k1")))
    assert not other.verify(token, VIDEO)  # same key id, another secret
    for garbage in ("", "x", "k1..", "k1.zz." + "A" * 22 + ".r-", token + "/"):
        assert not ring.verify(garbage, VIDEO)


def test_bindings(ring: KeyRing) -> None:
    regional = ring.sign(VIDEO, 60, binding=bind_region("eu-west"))
    assert ring.verify(regional, VIDEO, Viewer("eu-west", "10.0.0.1"))
    assert not ring.verify(regional, VIDEO, Viewer("ap-southeast", "10.0.0.1"))
    assert not ring.verify(regional, VIDEO)  # a binding is never skipped by default
    network = ring.sign(VIDEO, 60, binding=bind_address("10.1.2.3", 24))
    assert ring.verify(network, VIDEO, Viewer("eu-west", "10.1.2.200"))
    assert not ring.verify(network, VIDEO, Viewer("eu-west", "10.1.3.1"))
    one = ring.sign(VIDEO, 60, binding=bind_address("2001:db8::1"))
    assert ring.verify(one, VIDEO, Viewer(None, "2001:db8::1"))
    assert not ring.verify(one, VIDEO, Viewer(None, "2001:db8::2"))
    # Tampering with the binding breaks the signature.
    assert not ring.verify(regional.replace("eu-west", "ap-southeast"), VIDEO, Viewer("ap-southeast"))


def test_the_token_is_a_path_segment_and_never_in_a_key_or_a_log(ring: KeyRing) -> None:
    token = ring.sign(VIDEO, 60)
    path = token_path(f"/vod/{VIDEO}/v720/seg_00001.m4s", token)
    assert path == f"/vod/{VIDEO}/~{token}/v720/seg_00001.m4s"
    assert split_path(path) == (f"/vod/{VIDEO}/v720/seg_00001.m4s", token)
    assert redact(path) == f"/vod/{VIDEO}/v720/seg_00001.m4s"
    assert split_path(f"/vod/{VIDEO}/master.m3u8") == (f"/vod/{VIDEO}/master.m3u8", None)
    assert split_path(f"/vod/{VIDEO}/v720/~{token}/x.m4s")[1] is None  # only right after the id


def test_keys_rotate_through_the_ring_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "keys.json"
    first = KeyRing.generate("k1")
    path.write_text(json.dumps(first))
    ring = KeyRing.load(str(path))
    old = ring.sign(VIDEO, 60)
    both = {"sign": "k2", "keys": {**first["keys"], **KeyRing.generate("k2")["keys"]}}
    path.write_text(json.dumps(both))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    monkeypatch.setattr(ring, "_checked", 0.0)
    new = ring.sign(VIDEO, 60)
    assert new.startswith("k2.") and ring.verify(old, VIDEO) and ring.verify(new, VIDEO)
    path.write_text(json.dumps({"sign": "k2", "keys": {"k2": both["keys"]["k2"]}}))
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 2 * 10**9))
    monkeypatch.setattr(ring, "_checked", 0.0)
    assert not ring.verify(old, VIDEO) and ring.verify(new, VIDEO)


def test_bad_rings_are_refused() -> None:
    with pytest.raises(KeyRingError):
        KeyRing.parse("{}")
    with pytest.raises(KeyRingError):
        KeyRing.parse(json.dumps({"sign": "k2", "keys": {"k1": "c2hvcnQ"}}))
