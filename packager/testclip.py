"""Generated test media (FFmpeg's test sources through PyAV): nothing is ever downloaded."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import av.filter


def _pull_all(graph_spec: list[tuple[str, str]]):
    """Frames from a source filter chain, through a buffersink."""
    graph = av.filter.Graph()
    nodes = [graph.add(name, args) for name, args in graph_spec]
    sink = graph.add("abuffersink" if graph_spec[0][0] in ("sine", "anoisesrc") else "buffersink")
    for a, b in zip(nodes, [*nodes[1:], sink], strict=True):
        a.link_to(b)
    graph.configure()
    while True:
        try:
            yield sink.pull()
        except (av.error.EOFError, av.error.BlockingIOError):
            return


def make_test_clip(
    path: Path | str,
    *,
    seconds: float = 10.0,
    width: int = 1280,
    height: int = 720,
    fps: int = 30,
    audio: bool = True,
    codec: str = "libx264",
    rotation: int = 0,
) -> Path:
    """Write an MP4 with a moving test pattern (and a tone) of the given shape.

    `rotation` (counter-clockwise degrees) goes into the display matrix, as phones write it.
    """
    path = Path(path)
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream(codec, rate=fps)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast", "crf": "23"} if codec == "libx264" else {}
        if rotation:
            video.set_display_rotation(rotation)
        sound = None
        if audio:
            sound = out.add_stream("aac", rate=48000, layout="stereo")
        frames = _pull_all([("testsrc2", f"size={width}x{height}:rate={fps}:duration={seconds}")])
        tone = iter(())
        if sound is not None:
            tone = _pull_all([("sine", f"frequency=440:sample_rate=48000:duration={seconds}"),
                              ("aformat", "sample_fmts=fltp:channel_layouts=stereo")])
        audio_time = 0.0
        for frame in frames:
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame.reformat(format="yuv420p")))
            # Interleave: keep the tone up to the picture so the muxer never buffers much.
            while sound is not None and audio_time <= frame.time:
                chunk = next(tone, None)
                if chunk is None:
                    break
                audio_time = float(chunk.pts * chunk.time_base) + chunk.samples / 48000
                chunk.pts = None
                out.mux(sound.encode(chunk))
        out.mux(video.encode(None))
        if sound is not None:
            for chunk in tone:
                chunk.pts = None
                out.mux(sound.encode(chunk))
            out.mux(sound.encode(None))
    return path
