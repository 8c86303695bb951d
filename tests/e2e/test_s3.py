"""The whole stack on S3: `reel up --store s3://...` runs control, worker and origin on a bucket of
a real S3 API server; a clip uploaded through the control API is packaged into the bucket and
served by the origin, and what the origin serves passes every packaging check."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.request import urlopen

import m3u8

from tests.e2e.conftest import UpProcess
from tests.media import check_hls, ffprobe_json
from tests.s3server import BUCKET, S3Server

SECONDS = 4.0


def _mirror(origin: str, video_id: str, out: Path) -> None:
    """Every object of the video, as the origin serves it, into `out`."""
    base = f"{origin}/vod/{video_id}"

    def fetch(name: str) -> bytes:
        with urlopen(f"{base}/{name}", timeout=30) as resp:
            data = resp.read()
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
        return data

    master = m3u8.loads(fetch("master.m3u8").decode())
    renditions = {p.uri.split("/")[0] for p in master.playlists}
    renditions |= {m.uri.split("/")[0] for m in master.media if m.uri}
    for name in renditions:
        playlist = m3u8.loads(fetch(f"{name}/index.m3u8").decode())
        fetch(f"{name}/init.mp4")
        for segment in playlist.segments:
            fetch(f"{name}/{segment.uri}")
        if name.startswith("v"):
            fetch(f"{name}/iframes.m3u8")


def test_upload_package_and_serve_on_s3(s3_env: S3Server, tmp_path: Path) -> None:
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    data = tmp_path / "data"
    up = UpProcess.start(data, "--store", s3_env.spec(prefix), "--demo",
                         "--demo-seconds", str(SECONDS))
    try:
        video_id = up.wait_for(r"demo video (\S+) is ready").group(1)
        origin = up.url(2)

        out = tmp_path / "out"
        _mirror(origin, video_id, out)
        master = check_hls(out, tmp_path, duration=SECONDS)
        assert len(master.playlists) >= 2
        probe = ffprobe_json("-show_entries", "stream=codec_type", f"{origin}/vod/{video_id}/master.m3u8")
        assert {s["codec_type"] for s in probe["streams"]} == {"video", "audio"}

        # Everything is in the bucket, under the prefix, and nothing went to the data directory.
        listed = s3_env.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/")
        keys = {o["Key"] for o in listed["Contents"]}
        assert f"{prefix}/vod/{video_id}/master.m3u8" in keys
        assert f"{prefix}/sources/{video_id}/source" in keys
        assert not (data / "objects").exists()

        up.wait_for(r"Ctrl-C stops everything")
        assert up.interrupt() == 0
        assert not any("Traceback" in line for line in up.lines), "\n".join(up.lines)
    finally:
        if up.proc.poll() is None:
            up.interrupt()
