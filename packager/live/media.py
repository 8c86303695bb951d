"""What a publisher's connection delivers, whatever the protocol: the contract between ingest
(RTMP, SRT) and the live packager. The protocol side knows nothing of encoding; the packager
knows nothing of protocols."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol


@dataclass(frozen=True)
class VideoConfig:
    """Video decoder configuration, as RTMP's sequence header carries it and as PyAV takes it for
    `extradata`: for H.264 an AVCDecoderConfigurationRecord (the avcC box body), for HEVC
    (Enhanced RTMP's `hvc1`) an HEVCDecoderConfigurationRecord (hvcC)."""

    avcc: bytes
    codec: str = "h264"  # or "hevc": the decoder's name


@dataclass(frozen=True)
class AudioConfig:
    """AAC decoder configuration: the AudioSpecificConfig (2+ bytes)."""

    asc: bytes
    sample_rate: int
    channels: int


@dataclass(frozen=True)
class MediaPacket:
    """One access unit. Times in milliseconds on the publisher's clock (RTMP's unit): `dts` as
    sent, `pts` = dts + composition offset. Video data is length-prefixed NAL units (AVCC); audio
    data is one raw AAC frame (no ADTS header)."""

    kind: Literal["video", "audio"]
    dts: int
    pts: int
    data: bytes
    keyframe: bool = False


class StreamSink(Protocol):
    """Where one published stream goes. Ingest calls `start` once the configurations are known
    (before the first packet), `packet` for every access unit in arrival order, and `end` when the
    publisher goes away (cleanly or not); a sink that raises ends the publisher's connection."""

    async def start(self, video: VideoConfig | None, audio: AudioConfig | None) -> None: ...

    async def packet(self, packet: MediaPacket) -> None: ...

    async def end(self) -> None: ...
