"""MPEG-TS (as ffmpeg's muxer writes it, SRT ingest) to what a Publisher takes: the first
program's first video stream (H.264 or HEVC) and first audio stream (AAC in ADTS), each PES an
access unit with its DTS and PTS; the configuration records built from the in-band parameter
sets and ADTS headers. Other codecs are refused by name; bad bytes cut the publisher off."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from packager.live import flv, nal
from packager.live.errors import CutOff
from packager.live.media import AudioConfig, MediaPacket, VideoConfig

PACKET = 188
# ffmpeg's MPEG-TS muxer as this reader wants it: each access unit a PES of its own (audio frames
# are not gathered) with its length, so it is whole at its last byte, not at the next one's start
FFMPEG_MUXER = ("-f", "mpegts", "-pes_payload_size", "0", "-omit_video_pes_length", "0")
Item = VideoConfig | AudioConfig | MediaPacket
# ISO 13818-1 stream types (and ffmpeg's): what a first video or audio stream may be
_VIDEO = {0x1B: "h264", 0x24: "hevc", 0x01: "mpeg1video", 0x02: "mpeg2video", 0x10: "mpeg4",
          0x42: "cavs", 0xD1: "dirac", 0xD2: "avs2", 0xEA: "vc1", 0x33: "vvc"}
_AUDIO = {0x0F: "aac", 0x03: "mp2", 0x04: "mp2", 0x11: "aac_latm", 0x81: "ac3", 0x87: "eac3"}
_WRAP = 1 << 33  # PTS and DTS: 33 bits of 90 kHz, about 26.5 hours


async def media(reader: asyncio.StreamReader, max_unit: int) -> AsyncIterator[Item]:
    """The items of an MPEG-TS byte stream until its end (a partial packet at the end is the
    remuxer stopping mid-write: ignored, its exit status tells)."""
    demux, pending = Demuxer(max_unit), b""
    while chunk := await reader.read(64 * PACKET):
        pending += chunk
        whole = len(pending) - len(pending) % PACKET
        for pos in range(0, whole, PACKET):
            for item in demux.packet(pending[pos : pos + PACKET]):
                yield item
        pending = pending[whole:]
    for item in demux.flush():
        yield item


class Demuxer:
    """188-byte packets in, items out. Holds at most one PES per stream (up to `max_unit`)."""

    def __init__(self, max_unit: int) -> None:
        self._max = max_unit
        self._pmt: int | None = None
        self._video: int | None = None
        self._audio: int | None = None
        self._units: nal.AccessUnits | None = None
        self._config: bytes | None = None
        self._audio_config: AudioConfig | None = None
        self._pes: dict[int, bytearray] = {}
        self._clock: _Clock = _Clock()

    def packet(self, packet: bytes) -> list[Item]:
        if packet[0] != 0x47:
            raise CutOff("bad_stream", detail="lost MPEG-TS sync")
        start, pid, control = packet[1] & 0x40, (packet[1] & 0x1F) << 8 | packet[2], packet[3] >> 4 & 3
        offset = 5 + packet[4] if control & 2 else 4
        if not control & 1 or offset >= PACKET:
            return []
        payload = packet[offset:]
        if pid == 0 and start and self._pmt is None:
            self._pmt = _program(_section(payload))
        elif pid == self._pmt and start and self._video is None and self._audio is None:
            self._streams(_section(payload))
        elif pid in (self._video, self._audio):
            return self._pes_data(pid, start, payload)
        return []

    def flush(self) -> list[Item]:
        """At the end: a PES with no length is complete; one with a length it lacks is dropped."""
        items = []
        for pid, pes in list(self._pes.items()):
            if pes[4:6] == b"\x00\x00":
                items += self._complete(pid, bytes(pes))
        self._pes.clear()
        return items

    def _streams(self, pmt: bytes) -> None:
        pos = 12 + ((pmt[10] & 0x0F) << 8 | pmt[11])
        while pos + 5 <= len(pmt):
            kind, pid = pmt[pos], (pmt[pos + 1] & 0x1F) << 8 | pmt[pos + 2]
            if kind in _VIDEO and self._video is None:
                if kind not in (0x1B, 0x24):
                    raise CutOff("unsupported_codec", codec=_VIDEO[kind])
                self._video, self._units = pid, nal.AccessUnits(_VIDEO[kind])
            elif kind in _AUDIO and self._audio is None:
                if kind != 0x0F:
                    raise CutOff("unsupported_codec", codec=_AUDIO[kind])
                self._audio = pid
            pos += 5 + ((pmt[pos + 3] & 0x0F) << 8 | pmt[pos + 4])

    def _pes_data(self, pid: int, start: int, payload: bytes) -> list[Item]:
        items = []
        if start and pid in self._pes:  # the next one begins: the one before is whole
            items = self._complete(pid, bytes(self._pes.pop(pid)))
        pes = self._pes.get(pid)
        if start:
            pes = self._pes[pid] = bytearray(payload)
        elif pes is None:
            return items  # the middle of a PES whose start came before ours
        else:
            pes += payload
        if len(pes) > self._max:
            raise CutOff("message_too_large", length=len(pes))
        length = int.from_bytes(pes[4:6], "big") if len(pes) >= 6 else 0
        if length and len(pes) >= 6 + length:  # sized: whole now, no wait for the next one
            items += self._complete(pid, bytes(self._pes.pop(pid)[: 6 + length]))
        return items

    def _complete(self, pid: int, pes: bytes) -> list[Item]:
        if len(pes) < 9 or pes[:3] != b"\x00\x00\x01" or not pes[7] & 0x80:
            raise CutOff("bad_stream", detail="PES without a start code or a PTS")
        pts = _timestamp(pes[9:14])
        dts = self._clock.ms(_timestamp(pes[14:19]) if pes[7] & 0x40 else pts)  # the clock's first
        pts = self._clock.ms(pts)
        data = pes[9 + pes[8] :]
        return self._video_unit(dts, pts, data) if pid == self._video else self._audio_frames(pts, data)

    def _video_unit(self, dts: int, pts: int, data: bytes) -> list[Item]:
        assert self._units is not None
        units = nal.split(data)
        if not units:
            return []
        keyframe = self._units.take(units)
        items: list[Item] = []
        if self._units.config != self._config:
            self._config = self._units.config
            items.append(VideoConfig(self._config, self._units.codec))
        if self._config is not None:  # before any parameter sets nothing decodes
            items.append(MediaPacket("video", dts, pts, nal.length_prefixed(units), keyframe))
        return items

    def _audio_frames(self, pts: int, data: bytes) -> list[Item]:
        """The ADTS frames of one PES, each a raw AAC frame 1024 samples after the one before."""
        items: list[Item] = []
        pos, frames = 0, 0
        while pos < len(data):
            head = data[pos : pos + 7]
            if len(head) < 7 or head[0] != 0xFF or head[1] & 0xF6 != 0xF0:
                raise CutOff("bad_audio", detail="not an ADTS frame")
            size = (head[3] & 0x03) << 11 | head[4] << 3 | head[5] >> 5
            header = 7 if head[1] & 0x01 else 9  # protection_absent, else a CRC follows
            if head[6] & 0x03:
                raise CutOff("unsupported_codec", codec="aac with several raw blocks per ADTS frame")
            if size <= header or pos + size > len(data):
                raise CutOff("bad_audio", detail="ADTS frame length does not fit the PES")
            profile, rate, channels = head[2] >> 6, head[2] >> 2 & 0x0F, (head[2] & 1) << 2 | head[3] >> 6
            asc = ((profile + 1) << 11 | rate << 7 | channels << 3).to_bytes(2, "big")
            if self._audio_config is None or asc != self._audio_config.asc:
                self._audio_config = flv.audio_config(asc)
                items.append(self._audio_config)
            at = pts + frames * 1024 * 1000 // self._audio_config.sample_rate
            items.append(MediaPacket("audio", at, at, data[pos + header : pos + size]))
            pos, frames = pos + size, frames + 1
        return items


class _Clock:
    """90 kHz timestamps to milliseconds from the first one, across the 33-bit wrap."""

    def __init__(self) -> None:
        self._first: int | None = None
        self._last = 0

    def ms(self, raw: int) -> int:
        if self._first is None:
            self._first = self._last = raw
        self._last += (raw - self._last + _WRAP // 2) % _WRAP - _WRAP // 2
        return (self._last - self._first) // 90


def _timestamp(field: bytes) -> int:
    if len(field) < 5:
        raise CutOff("bad_stream", detail="short PES header")
    return (field[0] >> 1 & 0x07) << 30 | field[1] << 22 | field[2] >> 1 << 15 | field[3] << 7 | field[4] >> 1


def _section(payload: bytes) -> bytes:
    """A PSI section (PAT, PMT) from the payload that starts it, its CRC left off."""
    section = payload[1 + payload[0] :]
    section = section[: 3 + ((section[1] & 0x0F) << 8 | section[2]) - 4] if len(section) >= 3 else b""
    if len(section) < 12:
        raise CutOff("bad_stream", detail="short PSI section")
    return section


def _program(pat: bytes) -> int | None:
    """The first program's PMT PID (program 0 is the network PID)."""
    for pos in range(8, len(pat) - 3, 4):
        if pat[pos : pos + 2] != b"\x00\x00":
            return (pat[pos + 2] & 0x1F) << 8 | pat[pos + 3]
    return None
