"""FLV: tag payloads, as RTMP's audio and video messages carry them (H.264, HEVC in Enhanced RTMP's
extended video tag header, and AAC; anything else is refused by name), and the tags around them,
back to back in an RTMP aggregate message."""

from __future__ import annotations

from collections.abc import Iterator

from packager.live.errors import CutOff
from packager.live.media import AudioConfig, MediaPacket, VideoConfig

_AVC, _AAC = 7, 10
_KEYFRAME, _INFO_FRAME = 1, 5
# Enhanced RTMP packet types
_SEQUENCE_START, _CODED_FRAMES, _SEQUENCE_END, _CODED_FRAMES_X, _METADATA = 0, 1, 2, 3, 4
_VIDEO_CODECS = {2: "h263", 3: "screen", 4: "vp6", 5: "vp6a", 6: "screen2", 12: "hevc"}
_AUDIO_CODECS = {0: "pcm", 1: "adpcm", 2: "mp3", 3: "pcm_le", 7: "g711a", 8: "g711u", 9: "ex", 11: "speex"}
# AudioSpecificConfig (ISO 14496-3 1.6.2.1): sampling frequency index and channel configuration.
_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)
_CHANNELS = {1: 1, 2: 2, 3: 3, 4: 4, 5: 5, 6: 6, 7: 8}
_SBR, _PS = 5, 29


def read_video(payload: bytes, timestamp: int) -> VideoConfig | MediaPacket | None:
    """A video tag's payload: the AVC sequence header, an access unit, or None (nothing to pass
    on: end of sequence, an info frame, an empty packet)."""
    if not payload:
        raise CutOff("bad_video", detail="empty video message")
    if payload[0] & 0x80:  # Enhanced RTMP: a FourCC (hvc1, av01, vp09) instead of a codec id
        return _read_enhanced(payload, timestamp)
    frame_type, codec = payload[0] >> 4, payload[0] & 0x0F
    if frame_type == _INFO_FRAME:
        return None
    if codec != _AVC:
        raise CutOff("unsupported_codec", codec=_VIDEO_CODECS.get(codec, str(codec)))
    if len(payload) < 5:
        raise CutOff("bad_video", detail="short AVC header")
    packet_type, body = payload[1], payload[5:]
    if packet_type == 0:
        return VideoConfig(_checked_avcc(body))
    if packet_type == 2 or not body:
        return None
    if packet_type != 1:
        raise CutOff("bad_video", detail=f"AVC packet type {packet_type}")
    composition = int.from_bytes(payload[2:5], "big", signed=True)
    return MediaPacket("video", timestamp, timestamp + composition, body, frame_type == _KEYFRAME)


def _read_enhanced(payload: bytes, timestamp: int) -> VideoConfig | MediaPacket | None:
    """Enhanced RTMP's extended video tag header (veovera's enhanced-rtmp v1): a frame type and
    packet type in the first byte, then a FourCC; HEVC (`hvc1`) only."""
    if len(payload) < 5:
        raise CutOff("bad_video", detail="short extended video header")
    frame_type, packet_type, fourcc = (payload[0] >> 4) & 0x07, payload[0] & 0x0F, payload[1:5]
    if fourcc != b"hvc1":
        raise CutOff("unsupported_codec", codec=fourcc.decode("latin-1"))
    if frame_type == _INFO_FRAME or packet_type in (_SEQUENCE_END, _METADATA):
        return None
    if packet_type == _SEQUENCE_START:
        return VideoConfig(_checked_hvcc(payload[5:]), "hevc")
    if packet_type == _CODED_FRAMES:  # with a composition time offset
        if len(payload) < 8:
            raise CutOff("bad_video", detail="short HEVC frame header")
        composition, body = int.from_bytes(payload[5:8], "big", signed=True), payload[8:]
    elif packet_type == _CODED_FRAMES_X:  # composition time zero
        composition, body = 0, payload[5:]
    else:
        raise CutOff("bad_video", detail=f"extended packet type {packet_type}")
    if not body:
        return None
    return MediaPacket("video", timestamp, timestamp + composition, body, frame_type == _KEYFRAME)


def _checked_hvcc(hvcc: bytes) -> bytes:
    # version 1, 22 bytes of profile, tier, level and sizes, then the parameter set arrays
    if len(hvcc) < 23 or hvcc[0] != 1:
        raise CutOff("bad_video", detail="not an HEVCDecoderConfigurationRecord")
    return hvcc


def _checked_avcc(avcc: bytes) -> bytes:
    # version 1, then profile, compatibility, level, length size, and at least one SPS
    if len(avcc) < 7 or avcc[0] != 1 or avcc[5] & 0x1F == 0:
        raise CutOff("bad_video", detail="not an AVCDecoderConfigurationRecord")
    return avcc


def nal_length_size(config: VideoConfig) -> int:
    if config.codec == "hevc":
        return (config.avcc[21] & 0x03) + 1  # hvcC's lengthSizeMinusOne
    return (config.avcc[4] & 0x03) + 1


def nal_units_fit(data: bytes, length_size: int) -> bool:
    """Whether `data` is exactly a run of length-prefixed NAL units: what a decoder will walk."""
    pos, end = 0, len(data)
    while pos < end:
        size = int.from_bytes(data[pos : pos + length_size], "big")
        if size == 0:
            return False
        pos += length_size + size
    return pos == end


def read_audio(payload: bytes, timestamp: int) -> AudioConfig | MediaPacket | None:
    """An audio tag's payload: the AAC sequence header, a raw AAC frame, or None (empty)."""
    if not payload:
        raise CutOff("bad_audio", detail="empty audio message")
    sound_format = payload[0] >> 4
    if sound_format != _AAC:
        raise CutOff("unsupported_codec", codec=_AUDIO_CODECS.get(sound_format, str(sound_format)))
    if len(payload) < 2:
        raise CutOff("bad_audio", detail="short AAC header")
    if len(payload) == 2:  # nothing (ffmpeg's remuxer heads FLV so before it knows the config)
        return None
    if payload[1] == 0:
        return audio_config(payload[2:])
    return MediaPacket("audio", timestamp, timestamp, payload[2:])


def audio_config(asc: bytes) -> AudioConfig:
    """An AudioSpecificConfig with the rate and channel count a decoder will output."""
    try:
        bits = _Bits(asc)
        object_type = _object_type(bits)
        rate = _frequency(bits)
        channels = _CHANNELS.get(bits.read(4), 0)
        if object_type in (_SBR, _PS):  # explicit HE-AAC: output runs at the extension rate
            rate = _frequency(bits)
    except ValueError as exc:
        raise CutOff("bad_audio", detail=str(exc)) from None
    if not channels:
        raise CutOff("unsupported_codec", codec="aac with a program config element")
    return AudioConfig(asc, rate, 2 if object_type == _PS else channels)


def _object_type(bits: _Bits) -> int:
    object_type = bits.read(5)
    return 32 + bits.read(6) if object_type == 31 else object_type


def _frequency(bits: _Bits) -> int:
    index = bits.read(4)
    if index == 15:
        return bits.read(24)
    if index >= len(_RATES):
        raise ValueError(f"reserved sampling frequency index {index}")
    return _RATES[index]


class _Bits:
    """Big-endian bit reader over a few bytes."""

    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.left = len(data) * 8

    def read(self, n: int) -> int:
        if n > self.left:
            raise ValueError("AudioSpecificConfig truncated")
        self.left -= n
        return (self.value >> self.left) & ((1 << n) - 1)


TAG_HEADER_SIZE = 11


def tag_header(header: bytes) -> tuple[int, int, int]:
    """An FLV tag header's (tag type, payload size, timestamp in ms)."""
    timestamp = int.from_bytes(header[4:7], "big") | header[7] << 24
    return header[0] & 0x1F, int.from_bytes(header[1:4], "big"), timestamp


def tags(data: bytes, base: int) -> Iterator[tuple[int, int, bytes]]:
    """FLV tags back to back, as in an RTMP aggregate message: (tag type, timestamp, payload),
    the first tag's time moved to `base` (the message's) and the others kept relative to it."""
    pos, first = 0, None
    while pos < len(data):
        if pos + TAG_HEADER_SIZE > len(data):
            raise CutOff("bad_message", detail="truncated aggregate")
        tag_type, size, timestamp = tag_header(data[pos : pos + TAG_HEADER_SIZE])
        end = pos + TAG_HEADER_SIZE + size
        if end + 4 > len(data):  # each tag is followed by its 4-byte size
            raise CutOff("bad_message", detail="truncated aggregate")
        first = timestamp if first is None else first
        yield tag_type, base + timestamp - first, data[pos + TAG_HEADER_SIZE : end]
        pos = end + 4
