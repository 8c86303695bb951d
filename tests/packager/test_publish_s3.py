"""Publishing straight into S3 while packaging, parallel chunks included: each process opens its own
S3 client in its StoreOutput's loop, and what lands in the bucket passes every packaging check."""

from __future__ import annotations

import asyncio
import functools
import uuid
from pathlib import Path

from origin.store import open_store
from packager import package
from packager.publish import StoreOutput
from packager.testclip import make_test_clip
from tests.media import check_hls
from tests.s3server import S3Server


async def _download(spec: str, prefix: str, keys: list[str], out: Path) -> None:
    async with open_store(spec) as store:
        for key in keys:
            path = out / key.removeprefix(prefix)
            path.parent.mkdir(parents=True, exist_ok=True)
            await store.read_to_file(key, path)


def test_parallel_chunks_publish_into_s3(s3_env: S3Server, tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "clip.mp4", seconds=13, width=320, height=180, fps=24)
    spec = s3_env.spec(f"publish-{uuid.uuid4().hex[:8]}")
    prefix = "vod/published1/"
    factory = functools.partial(StoreOutput.open, spec, prefix)
    with factory() as output:
        # 6 s chunks (6, 6, 1 s) over two processes, each writing into the bucket itself.
        package(clip, output=output, output_factory=factory, workers=2, chunk_seconds=6)

    bucket_prefix = spec.split("/", 3)[3] + "/"
    listed = s3_env.client().list_objects_v2(Bucket="reel-test", Prefix=bucket_prefix + prefix)
    keys = [o["Key"].removeprefix(bucket_prefix) for o in listed["Contents"]]
    assert f"{prefix}master.m3u8" in keys and f"{prefix}v144/seg_00003.m4s" in keys
    out = tmp_path / "out"
    asyncio.run(_download(spec, prefix, keys, out))
    check_hls(out, tmp_path, 13.0, frame_rate=24)
