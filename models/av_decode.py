"""Decoding through FFmpeg (PyAV) what libsndfile cannot read: AAC and ALAC in MP4/M4A, WMA,
the soundtrack of a video (MP4, MOV, MKV/WebM, AVI, MPEG-TS), raw ADTS AAC, AC-3 and others.

Only the demuxers in `DEMUXERS` may open an input: FFmpeg can also read playlists and
concatenation lists that name other files or URLs, which must never run on an upload. Any
decoding error is fatal (FFmpeg's own command line would skip a bad packet and go on; a
service that charges for a job must not silently drop a part of the song).
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass
from typing import BinaryIO, Iterator

import av
import numpy as np

from .audio import AudioError

# FFmpeg demuxer names (a demuxer matches if any of its comma-separated names is listed)
DEMUXERS = ("mov", "asf", "matroska", "avi", "aac", "aiff", "caf", "flac", "mp3", "ogg", "wav", "w64",
            "ac3", "eac3", "amr", "mpegts", "mpeg", "flv", "wv", "ape", "tta")
# demuxers whose duration is an estimate (from the bitrate), so a shortfall is no proof of truncation
ESTIMATED = ("aac", "ac3", "eac3", "mp3", "mpeg", "mpegts", "amr")
NAMES = {"mov": "MP4", "asf": "ASF", "matroska": "MATROSKA", "aac": "ADTS"}
_INT_SCALE = {"s16": 1 / 32768, "s32": 1 / 2 ** 31, "s64": 1 / 2 ** 63}

logging.getLogger("libav").setLevel(logging.ERROR)  # FFmpeg's chatter; failures raise anyway


@dataclass
class Header:
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int  # 0 when the container declares no duration (e.g. a live WebM recording)
    exact: bool  # the declared length is the container's, not a bitrate estimate


def _is_mp4(head: bytes) -> bool:
    return head[4:8] == b"ftyp"


class AvStream:
    """The first audio stream of `source`, decoded to (n, channels) float32 blocks."""

    def __init__(self, source: str | BinaryIO):
        head = self._peek(source)
        try:
            self._container = av.open(source, options={"format_whitelist": ",".join(DEMUXERS)})
        except av.FFmpegError as e:
            if _is_mp4(head):
                raise AudioError("truncated", "the MP4/M4A file is incomplete: its index (moov) is missing, "
                                              "as when a download or upload is cut short") from e
            raise AudioError("unsupported", "not a recognised audio or video file") from e
        except OSError as e:
            raise AudioError("unreadable", f"the file cannot be read: {e.strerror or e}") from e
        streams = self._container.streams
        if not streams.audio:
            video = bool(streams.video)  # read before closing: the streams live in the container
            self.close()
            if video:
                raise AudioError("no_audio_stream", "the file has no audio track (a video without sound)")
            raise AudioError("unsupported", "not a recognised audio or video file")
        self._stream = streams.audio[0]
        ctx = self._stream.codec_context
        name = self._container.format.name.split(",")[0]
        self.header = Header(NAMES.get(name, name.upper()), (ctx.name or "?").upper(), ctx.sample_rate or 0,
                             ctx.channels or 0, self._declared_frames(ctx.sample_rate or 0),
                             name not in ESTIMATED)

    @staticmethod
    def _peek(source) -> bytes:
        if isinstance(source, (str, bytes)) or not hasattr(source, "read"):
            with open(source, "rb") as f:
                return f.read(16)
        pos = source.tell()
        head = source.read(16)
        source.seek(pos)
        return head

    def _declared_frames(self, rate: int) -> int:
        st = self._stream
        if st.duration and st.time_base:
            seconds = float(st.duration * st.time_base)
        elif self._container.duration:
            seconds = self._container.duration / av.time_base
        else:
            return 0
        return max(0, round(seconds * rate))

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        rate = self.header.sample_rate
        parts: list[np.ndarray] = []
        have = decoded = 0
        try:
            for packet in self._container.demux(self._stream):
                for frame in packet.decode():
                    if frame.sample_rate != rate:
                        raise AudioError("corrupt", "the sample rate changes in the middle of the stream")
                    x = _to_float(frame)
                    if parts and x.shape[1] != parts[-1].shape[1]:  # channel layout changed: flush
                        yield np.concatenate(parts)
                        parts, have = [], 0
                    parts.append(x)
                    have += x.shape[0]
                    decoded += x.shape[0]
                    if have >= block_frames:
                        yield np.concatenate(parts)
                        parts, have = [], 0
        except av.FFmpegError as e:
            raise AudioError("corrupt", f"the audio stream is corrupt or truncated after "
                                        f"{decoded / rate:.1f} s") from e
        if parts:
            yield np.concatenate(parts)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> "AvStream":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _to_float(frame: av.AudioFrame) -> np.ndarray:
    """(n, channels) float32 from any FFmpeg sample format, planar or packed."""
    a = frame.to_ndarray()
    channels = frame.layout.nb_channels
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    kind = frame.format.name.rstrip("p")
    if kind == "u8":
        return (a.astype(np.float32) - 128) / 128
    if kind in _INT_SCALE:
        return (a.astype(np.float64) * _INT_SCALE[kind]).astype(np.float32)
    return np.ascontiguousarray(a, dtype=np.float32)


def open_stream(source) -> AvStream:
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    elif hasattr(source, "seek"):
        source.seek(0)
    return AvStream(source)
