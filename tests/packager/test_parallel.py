"""A long input cut into chunks, encoded by parallel processes and stitched: the same checks hold."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import m3u8

from packager.testclip import make_test_clip
from tests.media import check_hls, count_frames, join_rendition


def test_chunks_encoded_in_parallel_stitch_without_a_seam(tmp_path: Path) -> None:
    clip = make_test_clip(tmp_path / "long.mp4", seconds=20, width=480, height=270, fps=30)
    out = tmp_path / "out"
    # 6 s chunks: four of them (6, 6, 6, 2 s) over two processes.
    subprocess.run([sys.executable, "-m", "reel", "package", str(clip), str(out),
                    "--workers", "2", "--chunk-seconds", "6"], check=True, timeout=300)
    master = check_hls(out, tmp_path, 20.0)  # IDRs, identical cuts, tfdt continuous, durations
    for playlist in master.playlists:
        name = playlist.uri.split("/")[0]
        media = m3u8.load(str(out / name / "index.m3u8"))
        assert [s.uri for s in media.segments] == [f"seg_{i:05d}.m4s" for i in range(1, 5)]
    # Every picture is there once: the seams neither drop nor repeat frames.
    assert count_frames(join_rendition(out, "v240", tmp_path)) == 20 * 30
    vtt = (out / "thumbs" / "storyboard.vtt").read_text()
    assert vtt.count("#xywh=") == 10  # a tile every 2 s, from every chunk
    assert (out / "thumbs" / "poster.jpg").stat().st_size > 0
