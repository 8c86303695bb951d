"""One accepted publisher's media, whatever the protocol: FLV tag payloads (or what a demuxer
of ours read) in, the sink's calls out, with the rules every stream must keep (video keeps
coming, time does not run back)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from packager.live import flv
from packager.live.errors import CutOff
from packager.live.media import AudioConfig, MediaPacket, StreamSink, VideoConfig

_Config = TypeVar("_Config", VideoConfig, AudioConfig)


@dataclass(frozen=True)
class MediaLimits:
    video_timeout: float = 10.0  # seconds without a video frame before the publisher is cut off
    backwards_ms: int = 1000  # how far a stream's timestamps may step back (jitter, not a restart)
    audio_wait_ms: int = 1500  # video held this long for an audio config that comes late
    pending_packets: int = 512  # packets held before the sink starts, at most


class Publisher:
    """Calls `sink.start` once both configurations are known (encoders send both sequence
    headers before any frame; a remuxer may send the audio one a little after the first frames),
    or once video has waited `audio_wait_ms` for audio; then `packet` for every access unit in
    arrival order, those held meanwhile first. `end` exactly once, however the publisher goes."""

    def __init__(self, sink: StreamSink, limits: MediaLimits, now: float) -> None:
        self._sink = sink
        self._limits = limits
        self._video: VideoConfig | None = None
        self._audio: AudioConfig | None = None
        self._started = False
        self._ended = False
        # bounded: audio with no video yet drops its oldest (no_video cuts such a stream off)
        self._pending: deque[MediaPacket] = deque(maxlen=limits.pending_packets)
        self._newest: dict[str, int] = {}
        self._video_at = now
        self.packets = 0

    async def video(self, payload: bytes, timestamp: int, now: float) -> None:
        await self._video_item(flv.read_video(payload, timestamp), now)

    async def audio(self, payload: bytes, timestamp: int) -> None:
        await self._audio_item(flv.read_audio(payload, timestamp))

    async def take(self, item: VideoConfig | AudioConfig | MediaPacket, now: float) -> None:
        """What a demuxer of ours read (SRT's MPEG-TS) rather than an FLV tag's payload."""
        if isinstance(item, AudioConfig) or (isinstance(item, MediaPacket) and item.kind == "audio"):
            await self._audio_item(item)
        else:
            await self._video_item(item, now)

    async def _video_item(self, item: VideoConfig | MediaPacket | None, now: float) -> None:
        if isinstance(item, VideoConfig):
            self._video = self._configured(self._video, item)
        elif item is not None:
            if self._video is None:
                raise CutOff("no_video_config", detail="a video frame before the AVC sequence header")
            if not flv.nal_units_fit(item.data, flv.nal_length_size(self._video)):
                raise CutOff("bad_video", detail="NAL unit lengths do not fit the message")
            self._video_at = now
            await self._accept(item)

    async def _audio_item(self, item: AudioConfig | MediaPacket | None) -> None:
        if isinstance(item, AudioConfig):
            if not self._started or self._audio is not None:  # a sink started without audio keeps none
                self._audio = self._configured(self._audio, item)
            if self._ready():
                await self._start()
        elif item is not None:
            await self._accept(item)

    def check(self, now: float) -> None:
        """Cut off a publisher whose video stopped (or never came) while other bytes flow."""
        silent = now - self._video_at
        if silent > self._limits.video_timeout:
            raise CutOff("no_video", seconds=round(silent, 1))

    async def end(self) -> None:
        if not self._ended:
            self._ended = True
            await self._sink_call(self._sink.end())

    def _configured(self, current: _Config | None, new: _Config) -> _Config:
        if self._started and current is not None and current != new:
            raise CutOff("config_changed", detail="a new sequence header mid-stream")
        return new

    def _check_time(self, packet: MediaPacket) -> None:
        newest = self._newest.get(packet.kind, packet.dts)
        if packet.dts < newest - self._limits.backwards_ms:
            raise CutOff("timestamps_backwards", kind=packet.kind, dts=packet.dts, newest=newest)
        self._newest[packet.kind] = max(newest, packet.dts)

    async def _accept(self, packet: MediaPacket) -> None:
        self._check_time(packet)
        if not self._started:
            self._pending.append(packet)
            if self._ready():
                await self._start()
        else:
            await self._deliver(packet)

    def _ready(self) -> bool:
        if self._started or self._video is None:
            return False
        video = [packet.dts for packet in self._pending if packet.kind == "video"]
        return bool(video) and (self._audio is not None or len(self._pending) >= self._limits.pending_packets
                                or video[-1] - video[0] >= self._limits.audio_wait_ms)

    async def _start(self) -> None:
        self._started = True
        await self._sink_call(self._sink.start(self._video, self._audio))
        pending, self._pending = self._pending, deque()
        for packet in pending:
            await self._deliver(packet)

    async def _deliver(self, packet: MediaPacket) -> None:
        if packet.kind == "audio" and self._audio is None:
            return  # the sink started without audio
        self.packets += 1
        await self._sink_call(self._sink.packet(packet))

    @staticmethod
    async def _sink_call(call: Awaitable[None]) -> None:
        try:
            await call
        except Exception as exc:  # the sink's failure ends this publisher, never the server
            raise CutOff("sink_error", error=repr(exc)) from exc
