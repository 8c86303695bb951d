"""A CMAF (fragmented MP4) writer: init segments and media segments, one track each.

We write the boxes ourselves rather than through libavformat's mp4 muxer so that we decide every
timestamp: decode times start at zero, composition offsets are signed (trun v1) so the first
picture is presented at zero even with B-frames (no edit list, which MSE players ignore, and so no
buffer hole at the start), and each segment is exactly one moof+mdat whose boundaries we chose.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)
SYNC_FLAGS = 0x02000000  # sample_depends_on = 2: an IDR / audio frame
NON_SYNC_FLAGS = 0x01010000  # sample_depends_on = 1, sample_is_non_sync_sample = 1


def box(kind: bytes, *payload: bytes) -> bytes:
    body = b"".join(payload)
    return struct.pack(">I4s", 8 + len(body), kind) + body


def full_box(kind: bytes, version: int, flags: int, *payload: bytes) -> bytes:
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


# --- H.264 parameter sets -------------------------------------------------------------------


def split_annexb(data: bytes) -> list[bytes]:
    """NAL units of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01).

    Start codes are found with bytes.find (C speed): a byte-by-byte Python loop over every
    encoded frame of every rendition would cost more CPU than a small encoder.
    """
    units = []
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        start += 3
        end = data.find(b"\x00\x00\x01", start)
        unit = data[start:] if end < 0 else data[start:end]
        # A four-byte start code leaves a zero at the end of the previous unit.
        unit = unit.rstrip(b"\x00") if end >= 0 else unit
        if unit:
            units.append(unit)
        start = end
    return units


def annexb_to_avcc(data: bytes) -> bytes:
    """Length-prefixed NAL units, as MP4 carries them; access unit delimiters dropped."""
    if not data.startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")):
        return data  # already length-prefixed
    return b"".join(struct.pack(">I", len(u)) + u for u in split_annexb(data) if u[0] & 0x1F != 9)


@dataclass(frozen=True)
class AvcConfig:
    sps: bytes
    pps: bytes

    @classmethod
    def from_extradata(cls, extradata: bytes) -> AvcConfig:
        units = split_annexb(extradata)
        sps = next((u for u in units if u[0] & 0x1F == 7), None)
        pps = next((u for u in units if u[0] & 0x1F == 8), None)
        if sps is None or pps is None:
            raise ValueError("H.264 extradata has no SPS/PPS")
        return cls(sps, pps)

    @property
    def codecs(self) -> str:
        """RFC 6381 codecs string: avc1.PPCCLL from the SPS itself."""
        return f"avc1.{self.sps[1]:02x}{self.sps[2]:02x}{self.sps[3]:02x}"

    def avcc_box(self) -> bytes:
        body = bytes([1, self.sps[1], self.sps[2], self.sps[3], 0xFF, 0xE1])
        body += struct.pack(">H", len(self.sps)) + self.sps
        body += b"\x01" + struct.pack(">H", len(self.pps)) + self.pps
        if self.sps[1] in HIGH_PROFILES:
            # High profiles carry chroma format and bit depths, as the SPS declares them.
            chroma, luma_depth, chroma_depth = _sps_format(self.sps)
            body += bytes([0xFC | chroma, 0xF8 | (luma_depth - 8), 0xF8 | (chroma_depth - 8), 0])
        return box(b"avcC", body)


HIGH_PROFILES = (100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135)


def _sps_format(sps: bytes) -> tuple[int, int, int]:
    """(chroma_format_idc, luma bit depth, chroma bit depth) of a High-profile SPS (H.264 7.3.2.1.1)."""
    rbsp = sps[4:].replace(b"\x00\x00\x03", b"\x00\x00")  # emulation prevention bytes out
    bits = "".join(f"{b:08b}" for b in rbsp[:16])
    pos = 0

    def ue() -> int:
        nonlocal pos
        zeros = bits.index("1", pos) - pos
        value = int(bits[pos + zeros:pos + 2 * zeros + 1], 2) - 1
        pos += 2 * zeros + 1
        return value

    ue()  # seq_parameter_set_id
    chroma = ue()
    if chroma == 3:
        pos += 1  # separate_colour_plane_flag
    return chroma, ue() + 8, ue() + 8


# --- tracks -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoTrack:
    config: AvcConfig
    width: int
    height: int
    timescale: int = 90000
    track_id: int = 1
    delay: int = 0  # ticks from the first decode to the first presentation: edited out

    handler = b"vide"

    def sample_entry(self) -> bytes:
        return box(
            b"avc1",
            bytes(6), struct.pack(">H", 1),  # reserved, data_reference_index
            bytes(16),
            struct.pack(">HH", self.width, self.height),
            struct.pack(">II", 0x00480000, 0x00480000), bytes(4),
            struct.pack(">H", 1), bytes(32),  # frame_count, compressorname
            struct.pack(">Hh", 0x18, -1),
            self.config.avcc_box(),
        )

    def media_header(self) -> bytes:
        return full_box(b"vmhd", 0, 1, bytes(8))

    @property
    def codecs(self) -> str:
        return self.config.codecs


@dataclass(frozen=True)
class AudioTrack:
    audio_specific_config: bytes
    channels: int
    sample_rate: int
    bitrate: int
    track_id: int = 1

    handler = b"soun"

    @property
    def timescale(self) -> int:
        return self.sample_rate

    @property
    def codecs(self) -> str:
        object_type = self.audio_specific_config[0] >> 3
        return f"mp4a.40.{object_type}"

    def sample_entry(self) -> bytes:
        def descriptor(tag: int, body: bytes) -> bytes:
            return bytes([tag, len(body)]) + body

        decoder_specific = descriptor(5, self.audio_specific_config)
        decoder_config = descriptor(
            4,
            bytes([0x40, 0x15]) + (0).to_bytes(3, "big")
            + struct.pack(">II", self.bitrate, self.bitrate) + decoder_specific,
        )
        es = descriptor(3, struct.pack(">HB", self.track_id, 0) + decoder_config + descriptor(6, b"\x02"))
        return box(
            b"mp4a",
            bytes(6), struct.pack(">H", 1), bytes(8),
            struct.pack(">HHHH", self.channels, 16, 0, 0),
            struct.pack(">I", self.sample_rate << 16),
            full_box(b"esds", 0, 0, es),
        )

    def media_header(self) -> bytes:
        return full_box(b"smhd", 0, 0, bytes(4))


Track = VideoTrack | AudioTrack


def init_segment(track: Track) -> bytes:
    """ftyp + moov for one track: everything a decoder needs before the first media segment."""
    is_video = isinstance(track, VideoTrack)
    width, height = (track.width, track.height) if is_video else (0, 0)
    tkhd = full_box(
        b"tkhd", 0, 3,
        struct.pack(">IIIII", 0, 0, track.track_id, 0, 0), bytes(8),
        struct.pack(">hhhH", 0, 0, 0 if is_video else 0x0100, 0), MATRIX,
        struct.pack(">II", width << 16, height << 16),
    )
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIIIHH", 0, 0, track.timescale, 0, 0x55C4, 0))
    name = b"reel video\x00" if is_video else b"reel audio\x00"
    hdlr = full_box(b"hdlr", 0, 0, bytes(4), track.handler, bytes(12), name)
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    stbl = box(
        b"stbl",
        full_box(b"stsd", 0, 0, struct.pack(">I", 1), track.sample_entry()),
        full_box(b"stts", 0, 0, bytes(4)),
        full_box(b"stsc", 0, 0, bytes(4)),
        full_box(b"stsz", 0, 0, bytes(8)),
        full_box(b"stco", 0, 0, bytes(4)),
    )
    minf = box(b"minf", track.media_header(), dinf, stbl)
    trak = box(b"trak", tkhd, *_edits(track), box(b"mdia", mdhd, hdlr, minf))
    mvhd = full_box(
        b"mvhd", 0, 0,
        struct.pack(">IIII", 0, 0, 1000, 0), struct.pack(">IH", 0x10000, 0x0100), bytes(10),
        MATRIX, bytes(24), struct.pack(">I", track.track_id + 1),
    )
    mvex = box(b"mvex", full_box(b"trex", 0, 0, struct.pack(">IIIII", track.track_id, 1, 0, 0, 0)))
    ftyp = box(b"ftyp", b"iso6", struct.pack(">I", 0), b"iso6cmfcmp41")
    return ftyp + box(b"moov", mvhd, trak, mvex)


def _edits(track: Track) -> list[bytes]:
    """An edit list that starts presentation at the first picture: its composition offsets are
    never negative (a reorder delay every reader agrees on), and the edit takes the delay away, so
    the first picture and the first audio sample are both presented at zero."""
    delay = getattr(track, "delay", 0)
    if not delay:
        return []
    # segment_duration 0: the edit lasts as long as the fragments do (ISO/IEC 14496-12 8.6.6).
    elst = full_box(b"elst", 0, 0, struct.pack(">IIiHH", 1, 0, delay, 1, 0))
    return [box(b"edts", elst)]


@dataclass(frozen=True)
class Sample:
    data: bytes
    duration: int  # in track timescale
    composition_offset: int  # presentation time minus decode time, may be negative
    sync: bool


@dataclass(frozen=True)
class Fragment:
    """One media segment's bytes, and where its first (key) sample lies, for I-frame playlists."""

    data: bytes
    key_offset: int  # start of the moof
    key_length: int  # moof, mdat header and the first sample


def media_segment(track: Track, sequence: int, decode_time: int, samples: list[Sample],
                  styp: bool = True) -> Fragment:
    """styp + moof + mdat holding `samples`, the first decoded at `decode_time`. Without `styp`:
    a CMAF chunk (an LL-HLS part after a segment's first), which carries no styp of its own."""
    entries = b"".join(
        struct.pack(
            ">IIIi", s.duration, len(s.data), SYNC_FLAGS if s.sync else NON_SYNC_FLAGS,
            s.composition_offset,
        )
        for s in samples
    )
    # tfhd: default-base-is-moof, so trun's data offset counts from the start of moof.
    tfhd = full_box(b"tfhd", 0, 0x020000, struct.pack(">I", track.track_id))
    tfdt = full_box(b"tfdt", 1, 0, struct.pack(">Q", decode_time))
    trun_flags = 0x000001 | 0x000100 | 0x000200 | 0x000400 | 0x000800

    def moof(data_offset: int) -> bytes:
        trun = full_box(b"trun", 1, trun_flags, struct.pack(">Ii", len(samples), data_offset), entries)
        return box(b"moof", full_box(b"mfhd", 0, 0, struct.pack(">I", sequence)),
                   box(b"traf", tfhd, tfdt, trun))

    size = len(moof(0))
    head = box(b"styp", b"msdh", struct.pack(">I", 0), b"msdh") if styp else b""  # no sidx: no msix
    data = head + moof(size + 8) + box(b"mdat", *(s.data for s in samples))
    return Fragment(data, len(head), size + 8 + len(samples[0].data))
