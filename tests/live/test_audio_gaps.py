"""The sound follows the publisher's audio clock: a hole in its audio (OBS dropping audio under
load, a mic that stops, lost packets) is filled with silence, not closed up, and audio sent twice
is not heard twice, so what comes after stays on its pictures (lip-sync) and the sound ends with
them. The publisher's tone beeps for the first 100 ms of every second: a viewer hears each beep
on its second, whatever was missing or repeated before it."""

from __future__ import annotations

import itertools
import subprocess
from array import array
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import m3u8
import pytest
from prometheus_client import CollectorRegistry

from packager.live.config import AAC_FRAME, AUDIO_RATE, Cadence, LiveConfig
from packager.live.encode import LiveAudioLane, LiveMetrics
from packager.live.media import MediaPacket
from packager.live.playlist import Part
from packager.live.stream import LiveStream
from packager.output import DirectoryOutput
from tests.live import rig
from tests.live.rig import TEST_CONFIG, Publication, demuxed
from tests.media import boxes, ffprobe_json, fragment_timing, join_rendition, track_timescale

SECONDS = 4
FRAME = AAC_FRAME / AUDIO_RATE  # 21.3 ms
BASE, BEEP = 0.2, 0.8  # the tone's amplitude, and the beep's


def beeping(path: Path) -> Publication:
    """A test pattern at 30 fps over a 440 Hz tone that is four times louder for the first
    100 ms of each second."""
    tone = f"{BASE}*sin(2*PI*440*t)*(1+3*lt(mod(t\\,1)\\,0.1))"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-y",
                    "-f", "lavfi", "-i", f"testsrc2=size=640x360:rate=30:duration={SECONDS}",
                    "-f", "lavfi", "-i", f"aevalsrc={tone}|{tone}:s=48000:d={SECONDS}",
                    "-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-c:a", "aac",
                    "-b:a", "128k", str(path)], check=True, timeout=60)
    return demuxed(path)


def without(source: Publication, start_ms: int, end_ms: int) -> list[MediaPacket]:
    """The publisher's packets without its audio from `start_ms` to `end_ms`; what follows
    keeps its timestamps."""
    return [p for p in source.packets if p.kind != "audio" or not start_ms <= p.pts < end_ms]


def repeating(source: Publication, start_ms: int, end_ms: int, shift_ms: int) -> list[MediaPacket]:
    """The publisher's packets with its audio from `start_ms` to `end_ms` sent again once it
    reached `end_ms` (`shift_ms` later than the first time)."""
    again = [replace(p, pts=p.pts + shift_ms, dts=p.dts + shift_ms) for p in source.packets
             if p.kind == "audio" and start_ms <= p.pts < end_ms]
    out: list[MediaPacket] = []
    for packet in source.packets:
        if again and packet.kind == "audio" and packet.pts >= end_ms:
            out, again = out + again, []
        out.append(packet)
    return out


async def publish(source: Publication, packets: list[MediaPacket], root: Path) -> tuple[Path, float]:
    """The packets into a live stream, each at its time (fed all at once, a rung would drop
    pictures, the stream's last among them); its directory and the seconds of silence it
    counted in."""
    metrics = LiveMetrics(CollectorRegistry())
    metrics.forget = lambda *_: None  # type: ignore[method-assign]  # read it after the end
    stream = LiveStream("gap00001", DirectoryOutput(root), config=TEST_CONFIG, metrics=metrics)
    await rig.publish(stream, replace(source, packets=packets))
    filled = metrics.audio_filled.labels("gap00001")._value.get()
    return root, filled


def starts(out: Path, name: str) -> dict[int, float]:
    """Each segment's media time (its first fragment's tfdt), by media sequence number."""
    scale = track_timescale((out / name / "init.mp4").read_bytes())
    return {int(seg.stem[4:]): fragment_timing(seg.read_bytes())[0] / scale
            for seg in sorted((out / name).glob("seg_*.m4s"))}


def audio_parts(out: Path) -> list[float]:
    """Every audio part's media time (a part is one moof+mdat), in order."""
    times = []
    for seg in sorted((out / "a128").glob("seg_*.m4s")):
        data = seg.read_bytes()
        moofs = [start - 8 for kind, start, _ in boxes(data) if kind == b"moof"]
        for a, b in zip(moofs, [*moofs[1:], len(data)], strict=True):
            times.append(fragment_timing(data[a:b])[0] / AUDIO_RATE)
    return times


def duration(out: Path, name: str) -> float:
    """A rendition's length as its final playlist lists it."""
    return sum(s.duration for s in m3u8.load(str(out / name / "index.m3u8")).segments)


def heard(path: Path) -> tuple[array, float]:
    """The joined audio rendition decoded (left channel) and the time of its first sample."""
    samples, first = array("f"), None
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            assert frame.format.name == "fltp"
            first = float(frame.time) if first is None else first
            samples.frombytes(bytes(frame.planes[0])[: frame.samples * 4])
    assert first is not None
    return samples, first


def level(samples: array, first: float, start: float, end: float) -> float:
    """The loudest sample from `start` to `end` (seconds)."""
    return max(map(abs, samples[round((start - first) * AUDIO_RATE):
                                round((end - first) * AUDIO_RATE)]))


def beeps(samples: array, first: float) -> list[float]:
    """Where the sound turns loud (5 ms windows), in seconds."""
    window = AUDIO_RATE // 200
    peaks = [max(map(abs, samples[i:i + window])) for i in range(0, len(samples), window)]
    # Loud for 50 ms: a frame decoded out of its context (the first after a hole) may click.
    loud = [min(peaks[i:i + 10]) > (BASE + BEEP) / 2 for i in range(len(peaks))]
    return [first + i * window / AUDIO_RATE for i in range(1, len(loud)) if loud[i] and not loud[i - 1]]


def check_viewer(out: Path, tmp: Path) -> tuple[array, float]:
    """What every viewer must get: audio segments and parts on the pictures' grid, the sound
    as long as the pictures, each beep on its second. Returns the decoded sound."""
    video, audio = starts(out, "v360"), starts(out, "a128")
    assert sorted(audio) == sorted(video) == list(range(SECONDS))
    for msn, at in video.items():  # the sound's segments start within a frame of the pictures'
        assert 0 <= audio[msn] - at <= FRAME + 1e-3, (msn, audio[msn], at)
    part = float(TEST_CONFIG.part_seconds)
    for n, at in enumerate(audio_parts(out)):
        assert 0 <= at - n * part <= FRAME + 1e-3, (n, at)
    # The sound ends where the pictures do (a busy machine may drop the very last picture).
    assert duration(out, "v360") == pytest.approx(SECONDS, abs=0.05)
    assert duration(out, "a128") == pytest.approx(SECONDS, abs=FRAME)
    audio_path = join_rendition(out, "a128", tmp)
    # ffprobe reads the joined sound as one run of frames, from the pictures' start to their end.
    times = [float(p["pts_time"]) for p in ffprobe_json(
        "-show_entries", "packet=pts_time", str(audio_path))["packets"]]
    assert 0 <= times[0] <= FRAME and times[-1] + FRAME == pytest.approx(SECONDS, abs=FRAME)
    assert all(b - a == pytest.approx(FRAME, abs=1e-5) for a, b in itertools.pairwise(times))
    samples, first = heard(audio_path)
    # AAC's own delay (a frame) and its pre-echo blur a beep's onset by a frame or two.
    got = [t for t in beeps(samples, first) if t > 0.5]  # the first: wherever the sound began
    assert len(got) == SECONDS - 1, got
    assert all(abs(t - n) <= 2 * FRAME for n, t in enumerate(got, 1)), got
    return samples, first


async def test_a_hole_in_the_sound_is_silence_and_the_rest_stays_on_its_pictures(
        tmp_path: Path) -> None:
    """Half a second of audio (1.2 to 1.7 s) never arrives: the sound after it is where its
    timestamps say, and the hole is silence, counted."""
    source = beeping(tmp_path / "clip.mp4")
    out, filled = await publish(source, without(source, 1200, 1700), tmp_path / "live")
    samples, first = check_viewer(out, tmp_path)
    assert level(samples, first, 1.2 + 3 * FRAME, 1.7 - FRAME) < 1e-3  # after the last tail
    assert level(samples, first, 0.7, 1.15) > BASE / 2  # the tone around it
    assert level(samples, first, 1.75, 1.95) > BASE / 2
    assert filled == pytest.approx(0.5, abs=FRAME)


async def test_audio_sent_twice_is_heard_once(tmp_path: Path) -> None:
    """A publisher sends 1.3 to 1.5 s of its audio again (15 ms later than the first time) once
    it reached 1.5 s: nothing of it is heard twice, nothing after it drifts late."""
    source = beeping(tmp_path / "clip.mp4")
    out, filled = await publish(source, repeating(source, 1300, 1500, 15), tmp_path / "live")
    check_viewer(out, tmp_path)
    assert filled == 0


def test_the_lane_places_each_frame_where_its_clock_says() -> None:
    """Frame by frame: part of a frame heard already is cut off, a frame heard already is
    skipped, a hole is filled, a few ms of jitter change nothing; the sound ends where the
    publisher's clock put its last frame."""
    parts: list[Part] = []
    lane = LiveAudioLane(Cadence.of(Fraction(30), LiveConfig()), 128, parts.append)

    def frame() -> av.AudioFrame:
        out = av.AudioFrame(format="fltp", layout="stereo", samples=AAC_FRAME)
        for plane in out.planes:
            plane.update(bytes(plane.buffer_size))
        out.sample_rate = AUDIO_RATE
        return out

    at = [n * AAC_FRAME for n in range(10)]
    at += [10 * AAC_FRAME - 700]  # overlaps by 700 samples: 324 new ones
    at += [11 * AAC_FRAME + 100, 11 * AAC_FRAME]  # 2 ms late (jitter), then heard already
    at += [14 * AAC_FRAME]  # two frames missing before it
    for samples in at:
        lane.encode(frame(), samples / AUDIO_RATE)
    lane.finish(None)
    assert sum(p.duration for p in parts) == pytest.approx(15 * FRAME, abs=1e-4)
