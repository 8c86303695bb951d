"""Benchmark: `reel package` against the ffmpeg CLI on the same clip, ladder and x264 preset.

    python -m loadtest.bench_packager [--seconds 60] [--height 1080] [--preset veryfast]

Both run in the same session, one after the other, on a generated 1080p30 test pattern with audio.
Printed: wall time, peak RSS and (reel) the time until the first rendition is playable — an EVENT
playlist with a segment in it — and the ratios. The peer is one ffmpeg process with a
filter_complex split, forced keyframes every segment, fMP4 HLS, the same bitrates and VBV.

It imports nothing of reel: it runs `reel package` as a user would.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

# The default ladder of packager/ladder.py, as a peer would be configured: (height, kbps, profile).
LADDER = [(1080, 5000, "high"), (720, 3000, "high"), (480, 1400, "high"), (360, 800, "main"),
          (240, 400, "main"), (144, 200, "main")]
SEGMENT = 6


def run_measured(cmd: list[str], watch: Path | None = None) -> dict:
    """Run `cmd`; wall time, peak RSS (MiB) and when `watch` first held a segment entry."""
    first_playable: list[float] = []
    start = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def poll() -> None:
        while proc.poll() is None and watch is not None:
            try:
                if "#EXTINF" in watch.read_text():
                    first_playable.append(time.monotonic() - start)
                    return
            except OSError:
                pass
            time.sleep(0.05)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {stderr[-2000:]}")
    watcher.join(1)
    return {"wall": wall, "rss_mib": usage.ru_maxrss / 1024, "cpu": usage.ru_utime + usage.ru_stime,
            "first_playable": first_playable[0] if first_playable else None}


def ffmpeg_command(source: Path, out: Path, preset: str, heights: list[int]) -> list[str]:
    rungs = [r for r in LADDER if r[0] in heights]
    split = f"[0:v]split={len(rungs)}" + "".join(f"[s{i}]" for i in range(len(rungs)))
    scales = [f"[s{i}]scale=-2:{h}[v{i}]" for i, (h, _, _) in enumerate(rungs)]
    cmd = ["ffmpeg", "-v", "error", "-y", "-i", str(source),
           "-filter_complex", ";".join([split, *scales])]
    for i, (_, kbps, profile) in enumerate(rungs):
        cmd += ["-map", f"[v{i}]", f"-c:v:{i}", "libx264", f"-b:v:{i}", f"{kbps}k",
                f"-maxrate:v:{i}", f"{kbps * 3 // 2}k", f"-bufsize:v:{i}", f"{kbps * 3}k",
                f"-profile:v:{i}", profile]
    cmd += ["-map", "0:a", "-c:a", "aac", "-b:a", "128k", "-ac", "2", "-ar", "48000",
            "-preset", preset, "-sc_threshold", "0",
            "-force_key_frames", f"expr:gte(t,n_forced*{SEGMENT})",
            "-f", "hls", "-hls_time", str(SEGMENT), "-hls_playlist_type", "vod",
            "-hls_segment_type", "fmp4", "-master_pl_name", "master.m3u8",
            "-hls_segment_filename", str(out / "v%v/seg_%05d.m4s"),
            "-var_stream_map", " ".join([f"v:{i},agroup:a" for i in range(len(rungs))]
                                        + ["a:0,agroup:a"]),
            str(out / "v%v/index.m3u8")]
    return cmd


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--preset", default="veryfast")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-packager-"))
    try:
        source = tmp / "source.mp4"
        width = args.height * 16 // 9
        subprocess.run(
            ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
             f"testsrc2=size={width}x{args.height}:rate=30:duration={args.seconds}",
             "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={args.seconds}",
             "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-c:a", "aac", str(source)],
            check=True, timeout=900)
        heights = [h for h, _, _ in LADDER if h <= args.height]
        print(f"source: {args.seconds} s {width}x{args.height}p30 + AAC; ladder {heights}; "
              f"x264 {args.preset}; segments {SEGMENT} s", flush=True)

        ffmpeg_out = tmp / "ffmpeg"
        ffmpeg_out.mkdir()
        peer = run_measured(ffmpeg_command(source, ffmpeg_out, args.preset, heights))
        print(f"ffmpeg : wall {peer['wall']:6.1f} s   cpu {peer['cpu']:6.1f} s   "
              f"peak RSS {peer['rss_mib']:6.0f} MiB", flush=True)

        reel_out = tmp / "reel"
        lowest = f"v{min(heights)}"
        reel = [sys.executable, "-m", "reel", "package", str(source), str(reel_out),
                "--preset", args.preset]
        ours = run_measured(reel, watch=reel_out / lowest / "index.m3u8")
        first = ours["first_playable"]
        print(f"reel   : wall {ours['wall']:6.1f} s   cpu {ours['cpu']:6.1f} s   "
              f"peak RSS {ours['rss_mib']:6.0f} MiB   "
              + (f"first playable {first:.1f} s" if first else "first playable: never seen"), flush=True)
        print(f"ratios : wall reel/ffmpeg {ours['wall'] / peer['wall']:.2f} (goal <= 1.00)   "
              f"RSS reel/ffmpeg {ours['rss_mib'] / peer['rss_mib']:.2f} (goal <= 1.00)   "
              f"first playable / ffmpeg wall {(first or 0) / peer['wall']:.2f} (goal <= 0.25)")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
