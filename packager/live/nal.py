"""H.264 and HEVC access units as MPEG-TS carries them (Annex B: start codes, parameter sets in
band) turned into what RTMP carries: length-prefixed NAL units and a decoder configuration
record (avcC, hvcC) built from the parameter sets, as ffmpeg's MP4 muxer builds it."""

from __future__ import annotations

import struct

from packager.live.errors import CutOff

LENGTH_SIZE = 4  # every record built here says lengthSizeMinusOne = 3
# NAL unit types: parameter sets, and the pictures a decoder can start at
_H264_SPS, _H264_PPS, _H264_IDR = 7, 8, 5
_HEVC_VPS, _HEVC_SPS, _HEVC_PPS = 32, 33, 34
_HEVC_IRAP = range(16, 24)
# H.264 profiles whose SPS carries chroma format and bit depths (ITU-T H.264 7.3.2.1.1)
_H264_HIGH = frozenset((100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135))


def split(annexb: bytes) -> list[bytes]:
    """The NAL units between start codes (00 00 01, or 00 00 00 01), trailing zeros dropped."""
    units, pos = [], annexb.find(b"\x00\x00\x01")
    while pos >= 0:
        start = pos + 3
        pos = annexb.find(b"\x00\x00\x01", start)
        unit = annexb[start : pos if pos >= 0 else len(annexb)].rstrip(b"\x00")
        if unit:
            units.append(unit)
    return units


def length_prefixed(units: list[bytes]) -> bytes:
    return b"".join(len(unit).to_bytes(LENGTH_SIZE, "big") + unit for unit in units)


class AccessUnits:
    """One video stream's access units: `config` is the record of the newest parameter sets
    (None until they came), `keyframe` says whether an access unit can start decoding."""

    def __init__(self, codec: str) -> None:
        self.codec = codec
        self._sets: dict[int, dict[bytes, None]] = {}  # by NAL type, in order, no repeats
        self.config: bytes | None = None

    def take(self, units: list[bytes]) -> bool:
        """Note the parameter sets among `units` (the record is rebuilt when they change);
        whether the access unit is a keyframe."""
        sets = {kind: {} for kind in self._set_types()}
        for unit in units:
            kind = self._type(unit)
            if kind in sets:
                sets[kind][unit] = None
        if all(sets.values()) and sets != self._sets:
            self._sets = sets
            self.config = self._record(*(list(found) for found in sets.values()))
        return any(self._keyframe(self._type(unit)) for unit in units)

    def _type(self, unit: bytes) -> int:
        return unit[0] >> 1 & 0x3F if self.codec == "hevc" else unit[0] & 0x1F

    def _set_types(self) -> tuple[int, ...]:
        return (_HEVC_VPS, _HEVC_SPS, _HEVC_PPS) if self.codec == "hevc" else (_H264_SPS, _H264_PPS)

    def _keyframe(self, kind: int) -> bool:
        return kind in _HEVC_IRAP if self.codec == "hevc" else kind == _H264_IDR

    def _record(self, *arrays: list[bytes]) -> bytes:
        try:
            return hvcc(*arrays) if self.codec == "hevc" else avcc(*arrays)
        except (ValueError, IndexError) as exc:
            raise CutOff("bad_video", detail=f"unreadable parameter set: {exc}") from None


def avcc(sps: list[bytes], pps: list[bytes]) -> bytes:
    """An AVCDecoderConfigurationRecord (ISO 14496-15 5.3.3.1): profile, compatibility and level
    from the first SPS, then the parameter sets; for the profiles whose SPS says so (High and
    up), chroma format and bit depths after them."""
    profile = sps[0][1]
    head = bytes([1, profile, sps[0][2], sps[0][3], 0xFC | LENGTH_SIZE - 1, 0xE0 | len(sps)])
    record = head + _sized(sps) + bytes([len(pps)]) + _sized(pps)
    if profile not in _H264_HIGH:
        return record
    bits = _Bits(unescape(sps[0][4:]))
    bits.ue()  # seq_parameter_set_id
    chroma = bits.ue()
    if chroma == 3:
        bits.u(1)  # separate_colour_plane_flag
    luma_depth, chroma_depth = bits.ue(), bits.ue()
    return record + bytes([0xFC | chroma, 0xF8 | luma_depth, 0xF8 | chroma_depth, 0])  # no SPS extensions


def hvcc(vps: list[bytes], sps: list[bytes], pps: list[bytes]) -> bytes:
    """An HEVCDecoderConfigurationRecord (ISO 14496-15 8.3.3.1) from the first SPS: its
    profile_tier_level's general part verbatim, chroma format and bit depths, temporal layers;
    no spatial segmentation, parallelism or frame rate claimed (ffmpeg's defaults)."""
    bits = _Bits(unescape(sps[0][2:]))  # after the two-byte NAL unit header
    bits.u(4)  # sps_video_parameter_set_id
    sub_layers, nested = bits.u(3), bits.u(1)
    general = bits.data[1:13]  # profile space, tier, profile, compatibility, constraints, level
    if len(general) < 12:
        raise ValueError("SPS truncated")
    bits.u(96)
    present = [(bits.u(1), bits.u(1)) for _ in range(sub_layers)]
    if sub_layers:
        bits.u(2 * (8 - sub_layers))
    for profile, level in present:
        bits.u(88 * profile + 8 * level)
    bits.ue()  # sps_seq_parameter_set_id
    chroma = bits.ue()
    if chroma == 3:
        bits.u(1)  # separate_colour_plane_flag
    bits.ue(), bits.ue()  # picture width and height
    if bits.u(1):  # conformance window
        for _ in range(4):
            bits.ue()
    luma_depth, chroma_depth = bits.ue(), bits.ue()
    tail = struct.pack(">BHBBBBHB", 1, 0xF000, 0xFC, 0xFC | chroma, 0xF8 | luma_depth, 0xF8 | chroma_depth,
                       0, (sub_layers + 1) << 3 | nested << 2 | LENGTH_SIZE - 1)
    arrays = b"".join(struct.pack(">BH", kind, len(units)) + _sized(units)
                      for kind, units in ((_HEVC_VPS, vps), (_HEVC_SPS, sps), (_HEVC_PPS, pps)))
    return tail[:1] + general + tail[1:] + bytes([3]) + arrays


def _sized(units: list[bytes]) -> bytes:
    return b"".join(struct.pack(">H", len(unit)) + unit for unit in units)


def unescape(rbsp: bytes) -> bytes:
    """Emulation-prevention bytes removed: 00 00 03 is 00 00 in the payload."""
    return rbsp.replace(b"\x00\x00\x03", b"\x00\x00")


class _Bits:
    """Big-endian bits, with Exp-Golomb codes (ue(v))."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def u(self, n: int) -> int:
        value = 0
        for _ in range(n):
            byte = self.pos >> 3
            if byte >= len(self.data):
                raise ValueError("SPS truncated")
            value = value << 1 | self.data[byte] >> (7 - (self.pos & 7)) & 1
            self.pos += 1
        return value

    def ue(self) -> int:
        zeros = 0
        while not self.u(1):
            zeros += 1
            if zeros > 31:
                raise ValueError("bad Exp-Golomb code")
        return (1 << zeros) - 1 + self.u(zeros)
