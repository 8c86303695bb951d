"""Every Store method, checked the same way on the directory store and on S3 (a real S3 API
server on loopback): what one passes, the other must."""

from __future__ import annotations

import asyncio
import hashlib
import os
import threading

import pytest

from origin import s3store
from origin.s3store import S3Store
from origin.store import DirectoryStore, InvalidKey, Store, StoreError, TooLarge, open_store
from tests.origin.stores import KINDS, LoopbackResolver, make_store

VID = "abcdef123"
SEG = f"vod/{VID}/v360/seg_00001.m4s"
MIB = 1024 * 1024


@pytest.fixture(params=KINDS)
async def store(request, tmp_path):
    s3 = request.getfixturevalue("s3_env") if request.param == "s3" else None
    async with make_store(request.param, tmp_path, s3) as store:
        yield store


def pattern(size: int, seed: int = 0) -> bytes:
    """`size` bytes where every offset is recognisable (no two 1 MiB blocks alike)."""
    block = hashlib.sha256(str(seed).encode()).digest() * 32  # 1 KiB
    out = bytearray()
    n = 0
    while len(out) < size:
        out += hashlib.sha256(block + n.to_bytes(8, "big")).digest() + block[32:]
        n += 1
    return bytes(out[:size])


async def chunked(data: bytes, size: int = MIB):
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def read_all(store: Store, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join([block async for block in store.read(key, start, end)])


async def uploads_in_progress(store: Store) -> list[str]:
    """Multipart uploads left open in the bucket (only an S3 store has any)."""
    if not isinstance(store, S3Store):
        return []
    s3 = await store._s3()
    listed = await s3.list_multipart_uploads(Bucket=store.bucket, Prefix=store.prefix)
    return [u["Key"] for u in listed.get("Uploads", [])]


async def test_round_trip(store):
    info = await store.write_bytes(SEG, b"segment bytes")
    assert (info.key, info.size) == (SEG, 13)
    assert info.etag.startswith('"') and info.etag.endswith('"') and len(info.etag) > 2
    assert await store.stat(SEG) == info
    assert await read_all(store, SEG) == b"segment bytes"


async def test_empty_object(store):
    info = await store.write_bytes(SEG, b"")
    assert info.size == 0
    assert await read_all(store, SEG) == b""


async def test_overwrite_replaces_and_changes_the_etag(store):
    first = await store.write_bytes(SEG, b"first version")
    second = await store.write_bytes(SEG, b"second versio")  # same size
    assert second.etag != first.etag
    assert await read_all(store, SEG) == b"second versio"


async def test_large_object_streams_through_parts(store):
    data = pattern(20 * MIB + 12345)
    info = await store.write(SEG, chunked(data, 3 * MIB + 7))
    assert info.size == len(data)
    if isinstance(store, S3Store):
        assert info.etag.endswith('-3"')  # three parts of one multipart upload
    digest = hashlib.sha256()
    largest = 0
    async for block in store.read(SEG):
        digest.update(block)
        largest = max(largest, len(block))
    assert digest.digest() == hashlib.sha256(data).digest()
    assert largest <= 1 * MIB  # streamed in chunks, never the whole object
    assert await read_all(store, SEG, 8 * MIB - 5, 8 * MIB + 5) == data[8 * MIB - 5 : 8 * MIB + 5]


async def test_write_memory_is_bounded_by_the_part_size(store):
    import tracemalloc

    size = 40 * MIB

    async def generated():  # made as it goes: the test itself holds one block at a time
        for n in range(size // MIB):
            yield n.to_bytes(4, "big") * (MIB // 4)

    await store.stat(SEG)  # the client and its service model are loaded before measuring
    tracemalloc.start()
    try:
        info = await store.write(SEG, generated())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.size == size
    # The part being filled, the one going up and the HTTP layer's copy of it: not 40 MiB.
    assert peak < 4 * 8 * MIB, peak
    assert await read_all(store, SEG, size - 4) == (size // MIB - 1).to_bytes(4, "big")


SIZE = 600_000  # a few read chunks


@pytest.mark.parametrize("start, end", [
    (0, None), (0, 1), (5, 10), (0, SIZE), (SIZE - 1, None), (SIZE - 1, SIZE),
    (262_143, 262_145), (100, SIZE + 1000), (SIZE, None), (SIZE + 10, None), (7, 7), (9, 3),
])
async def test_ranged_reads(store, start, end):
    data = pattern(SIZE, 1)
    await store.write_bytes(SEG, data)
    assert await read_all(store, SEG, start, end) == data[start:end]


async def test_missing_object(store, tmp_path):
    assert await store.stat(SEG) is None
    for start, end in ((0, None), (5, 10), (0, 0)):
        with pytest.raises(FileNotFoundError):
            await read_all(store, SEG, start, end)
    with pytest.raises(FileNotFoundError):
        await store.read_to_file(SEG, tmp_path / "out")


class Broken(Exception):
    pass


async def failing(data: bytes, fail_after: int):
    sent = 0
    async for block in chunked(data):
        if sent >= fail_after:
            raise Broken("the source went away")
        sent += len(block)
        yield block


@pytest.mark.parametrize("fail_after", [MIB, 10 * MIB])  # before and after the first part went up
async def test_failed_write_leaves_nothing(store, fail_after):
    with pytest.raises(Broken):
        await store.write(SEG, failing(pattern(12 * MIB), fail_after))
    assert await store.stat(SEG) is None
    assert await uploads_in_progress(store) == []


async def test_failed_write_keeps_the_previous_object(store):
    before = await store.write_bytes(SEG, b"published")
    with pytest.raises(Broken):
        await store.write(SEG, failing(pattern(12 * MIB), 10 * MIB))
    assert await store.stat(SEG) == before
    assert await read_all(store, SEG) == b"published"


@pytest.mark.parametrize("size, limit", [(100, 99), (12 * MIB, 9 * MIB)])
async def test_too_large_stores_nothing(store, size, limit):
    with pytest.raises(TooLarge):
        await store.write(SEG, chunked(pattern(size)), max_bytes=limit)
    assert await store.stat(SEG) is None
    assert await uploads_in_progress(store) == []
    assert (await store.write(SEG, chunked(pattern(size)), max_bytes=size)).size == size


async def test_cancelled_write_leaves_nothing(store):
    halfway = asyncio.Event()

    async def stalls():
        yield pattern(9 * MIB)  # a first part goes up
        halfway.set()
        await asyncio.Event().wait()
        yield b"never"

    writing = asyncio.create_task(store.write(SEG, stalls()))
    await halfway.wait()
    await asyncio.sleep(0.2)
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing
    assert await store.stat(SEG) is None
    assert await uploads_in_progress(store) == []


async def test_delete_prefix_removes_one_video_tree(store, monkeypatch):
    monkeypatch.setattr(s3store, "DELETE_BATCH", 4)  # several DeleteObjects batches
    other = "abcdef1234"  # shares a prefix with VID but is another video
    tree = [f"vod/{VID}/master.m3u8", *(f"vod/{VID}/v360/seg_{i:05d}.m4s" for i in range(1, 9)),
            f"vod/{VID}/v360/index.m3u8", f"vod/{VID}/thumbs/poster.jpg"]
    kept = [f"vod/{other}/master.m3u8", f"sources/{VID}/source", f"vod/{other}/v360/seg_00001.m4s"]
    for key in tree + kept:
        await store.write_bytes(key, key.encode())
    assert await store.delete_prefix(f"vod/{VID}/") == len(tree)
    for key in tree:
        assert await store.stat(key) is None
    for key in kept:
        assert await read_all(store, key) == key.encode()
    assert await store.delete_prefix(f"vod/{VID}/") == 0
    assert await store.delete_prefix("live/nothing-here/") == 0


async def test_copy_prefix_copies_one_video_tree(store):
    copy = "copy123456"
    tree = [f"vod/{VID}/master.m3u8", f"vod/{VID}/v360/index.m3u8", f"vod/{VID}/v360/seg_00001.m4s",
            f"vod/{VID}/thumbs/poster.jpg"]
    for key in tree:
        await store.write_bytes(key, key.encode())
    await store.write_bytes(f"sources/{VID}/source", b"not part of the tree")
    assert await store.copy_prefix(f"vod/{VID}/", f"vod/{copy}/") == len(tree)
    for key in tree:
        assert await read_all(store, key.replace(VID, copy)) == key.encode()
        assert await read_all(store, key) == key.encode()  # the source stays
    assert await store.stat(f"sources/{copy}/source") is None
    # A copy is its own: deleting it leaves the source whole.
    assert await store.delete_prefix(f"vod/{copy}/") == len(tree)
    assert all([await store.stat(key) for key in tree])
    assert await store.copy_prefix("vod/nothing1234/", f"vod/{copy}/") == 0


@pytest.mark.parametrize("pair", [(f"vod/{VID}", "vod/copy123456/"), (f"vod/{VID}/", "../x/"),
                                  (f"vod/{VID}/", "")])
async def test_copy_prefix_refuses_what_is_not_a_tree(store, pair):
    with pytest.raises(InvalidKey):
        await store.copy_prefix(*pair)


@pytest.mark.parametrize("key", [
    "../etc/passwd", "/vod/abcdef123/master.m3u8", f"vod/{VID}/../{VID}/master.m3u8",
    "vod/abc/master.m3u8", f"vod/{VID}\\v360\\init.mp4", f"vod/{VID}/v360/init.mp4\x00",
    f"vod/{VID}//init.mp4", "", "x" * 600,
])
async def test_invalid_keys_are_rejected(store, key):
    with pytest.raises(InvalidKey):
        await store.stat(key)
    with pytest.raises(InvalidKey):
        await read_all(store, key)
    with pytest.raises(InvalidKey):
        await store.write_bytes(key, b"x")


@pytest.mark.parametrize("prefix", ["", "/", "../", "vod/../../", "/vod/", "vod\\x", "vod/\x00"])
async def test_invalid_prefixes_are_rejected(store, prefix):
    await store.write_bytes(SEG, b"kept")
    with pytest.raises(InvalidKey):
        await store.delete_prefix(prefix)
    assert await read_all(store, SEG) == b"kept"


async def test_concurrent_reads(store):
    data = pattern(3 * MIB, 2)
    await store.write_bytes(SEG, data)
    spans = [(i * 100_003 % len(data), None if i % 3 == 0 else i * 100_003 % len(data) + 70_000 + i)
             for i in range(24)]
    results = await asyncio.gather(*(read_all(store, SEG, s, e) for s, e in spans))
    assert results == [data[s:e] for s, e in spans]


async def test_write_and_read_local_files(store, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(pattern(1 * MIB + 3))
    await store.write_file(f"sources/{VID}/source", src)
    assert await store.read_to_file(f"sources/{VID}/source", dst) == 1 * MIB + 3
    assert dst.read_bytes() == src.read_bytes()


async def test_close_then_use_again(store):
    await store.write_bytes(SEG, b"before close")
    await store.close()
    assert await read_all(store, SEG) == b"before close"


# S3 only: addressing, the spec's own endpoint, one client per loop, failures.

async def test_s3_virtual_hosted_and_path_addressing(s3_env):
    for addressing, host in (("virtual", "reel-test.localhost"), ("path", "localhost")):
        resolver = LoopbackResolver()
        endpoint = f"http://localhost:{s3_env.port}"
        async with S3Store("reel-test", f"addr-{addressing}", endpoint=endpoint, addressing=addressing,
                           connector_args={"resolver": resolver}) as store:
            await store.write_bytes(SEG, addressing.encode())
            assert await read_all(store, SEG) == addressing.encode()
            assert (await store.stat(SEG)).size == len(addressing)
            assert await store.delete_prefix("vod/") == 1
        assert set(resolver.names) == {host}, resolver.names


async def test_s3_endpoint_in_the_spec(s3_server, monkeypatch):
    for name, value in s3_server.env().items():
        if name != "AWS_ENDPOINT_URL_S3":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    spec = f"s3://reel-test/spec-endpoint/?endpoint={s3_server.url}&addressing=path&region=us-east-1"
    async with open_store(spec) as store:
        assert isinstance(store, S3Store) and store.prefix == "spec-endpoint/"
        await store.write_bytes(SEG, b"via the spec")
    objects = s3_server.client().list_objects_v2(Bucket="reel-test", Prefix="spec-endpoint/")
    assert [o["Key"] for o in objects["Contents"]] == [f"spec-endpoint/{SEG}"]


@pytest.mark.parametrize("spec", [
    "s3://", "s3://Bad_Bucket/x", "s3://ab/x", "s3://bucket/x?bogus=1", "s3://bucket/x?addressing=dns",
    "s3://bucket/x?endpoint=ftp://host", "s3://bucket/../x", "gs://bucket/x", "s3://bucket/x?endpoint",
])
def test_s3_bad_specs_are_clear_errors(spec):
    with pytest.raises(StoreError):
        open_store(spec)


async def test_s3_wrong_credentials_are_a_store_error(s3_env, monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    async with open_store(s3_env.spec("wrong-key")) as store:
        with pytest.raises(StoreError):
            await store.write_bytes(SEG, b"x")
        with pytest.raises(StoreError):
            await store.stat(SEG)


async def test_s3_unreachable_endpoint_is_a_store_error(s3_env):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nothing listens there
    async with S3Store("reel-test", "x", endpoint=f"http://127.0.0.1:{port}", max_attempts=2,
                       connect_timeout=1) as store:
        with pytest.raises(StoreError):
            await store.stat(SEG)
        with pytest.raises(StoreError):
            await read_all(store, SEG)


async def test_s3_store_belongs_to_one_loop(s3_env):
    store = open_store(s3_env.spec("loops"))
    await store.write_bytes(SEG, b"this loop")
    failure: list[BaseException] = []

    def other_loop() -> None:
        try:
            asyncio.run(store.stat(SEG))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=other_loop)
    thread.start()
    thread.join()
    assert len(failure) == 1 and isinstance(failure[0], StoreError)
    await store.close()


def test_s3_part_size_has_a_floor():
    with pytest.raises(StoreError):
        S3Store("reel-test", part_size=MIB)


@pytest.mark.parametrize("command", [
    ["origin", "--port", "0"],
    ["worker", "--control", "http://127.0.0.1:9", "--token", "t"],
    ["up", "--data", "unused"],
])
def test_cli_says_what_is_wrong_with_a_store_spec(command, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "reel", *command, "--store", "s3://bucket/x?bogus=1"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown parameter bogus" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "unused").exists()


def _modes(root) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_mode & 0o777 for p in root.rglob("*")}


async def test_directory_store_publishes_world_readable_and_keeps_sources_private(tmp_path):
    """Published objects are readable by another user (an origin, nginx, a backup job), whatever
    the umask of the writer; sources and staging stay the owner's."""
    old = os.umask(0o077)
    try:
        store = DirectoryStore(tmp_path / "store")
        await store.write_bytes(SEG, b"segment")
        await store.write_bytes(f"live/{VID}/v360/index.m3u8", b"#EXTM3U\n")
        await store.write_bytes(f"sources/{VID}/source", b"upload")
        await store.copy_prefix(f"vod/{VID}/", "vod/copy123456/")
    finally:
        os.umask(old)
    root = tmp_path / "store"
    assert root.stat().st_mode & 0o777 == 0o755
    assert _modes(root) == {
        ".tmp": 0o700,
        "sources": 0o700, f"sources/{VID}": 0o700, f"sources/{VID}/source": 0o600,
        "vod": 0o755, f"vod/{VID}": 0o755, f"vod/{VID}/v360": 0o755, SEG: 0o644,
        "vod/copy123456": 0o755, "vod/copy123456/v360": 0o755, "vod/copy123456/v360/seg_00001.m4s": 0o644,
        "live": 0o755, f"live/{VID}": 0o755, f"live/{VID}/v360": 0o755,
        f"live/{VID}/v360/index.m3u8": 0o644,
    }
