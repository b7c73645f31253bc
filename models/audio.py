"""Audio in: WAV, FLAC, OGG/Vorbis, Opus and MP3 through libsndfile (soundfile); whatever it
cannot read (AAC/M4A, ALAC, WMA, a video's soundtrack, …) through FFmpeg (PyAV, `av_decode`);
→ 44.1 kHz float32 stereo, never normalized.

Decoding streams: blocks are read, checked, down-mixed and resampled one at a time, so a
long file never has to sit in memory whole (`iter_decode`); `decode` joins the blocks for
callers that want an array.

Channel rule (documented in the README): mono is duplicated to both sides. For WAV-ordered
surround layouts (3.0 L R C, 4.0 L R Ls Rs, 5.0 L R C Ls Rs, 5.1 L R C LFE Ls Rs,
7.1 L R C LFE Lb Rb Ls Rs) front L/R pass at unity, the centre and every surround go to their
side at −3 dB (ITU-R BS.775) and the LFE is dropped. Any other count: odd-numbered channels are
averaged into the left, even-numbered into the right.
"""

from __future__ import annotations

import io
import math
import os
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator, Union

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .config import SAMPLE_RATE

Source = Union[str, os.PathLike, bytes, BinaryIO]

MIN_RATE, MAX_RATE = 8000, 384000
MAX_SECONDS = 2 * 3600  # the service's absolute ceiling; plans set their own, lower limits
BLOCK_FRAMES = 1 << 17
_MINUS_3DB = 10 ** (-3 / 20)


class AudioError(ValueError):
    """An input we cannot or will not decode; `code` is stable, the message is for people."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class AudioInfo:
    format: str
    subtype: str
    sample_rate: int
    channels: int
    frames: int  # as declared by the container (0: not declared, for some FFmpeg inputs)
    exact: bool = True  # False where the declared length is only an estimate (raw AAC, …)

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate

    @property
    def output_frames(self) -> int:
        """Length after resampling to 44.1 kHz (resample_poly's rounding)."""
        return math.ceil(self.frames * Fraction(SAMPLE_RATE, self.sample_rate))


class _SndReader:
    """libsndfile: exact lengths, and the formats it reads it reads without FFmpeg."""

    slack = 2 * 1152  # frames a declared length may exceed the decoded one (MP3 delay and padding)

    def __init__(self, f: sf.SoundFile):
        self._f = f
        self.info = AudioInfo(f.format, f.subtype, f.samplerate, f.channels, f.frames)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        decoded = 0
        while True:
            try:
                block = self._f.read(block_frames, dtype="float32", always_2d=True)
            except sf.LibsndfileError as e:
                raise AudioError("corrupt", f"the audio stream is corrupt or truncated "
                                            f"after {decoded / self.info.sample_rate:.1f} s") from e
            if block.shape[0] == 0:
                return
            decoded += block.shape[0]
            yield block

    def close(self) -> None:
        self._f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _AvReader:
    """FFmpeg through PyAV, for the containers and codecs libsndfile lacks."""

    def __init__(self, stream):
        self._s = stream
        h = stream.header
        self.info = AudioInfo(h.format, h.subtype, h.sample_rate, h.channels, h.frames, h.exact and h.frames > 0)
        # lossy codecs' priming and padding, and encoders that drop a partial last frame
        self.slack = max(2 * 1152, h.sample_rate // 10)

    def blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        return self._s.blocks(block_frames)

    def close(self) -> None:
        self._s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


SUPPORTED = "WAV, FLAC, OGG/Vorbis, Opus, MP3, AAC/M4A, ALAC, WMA, or a video with sound"


def _open(source: Source) -> _SndReader | _AvReader:
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise AudioError("empty", "the upload is empty (0 bytes)")
        source = io.BytesIO(bytes(source))
    elif isinstance(source, (str, os.PathLike)):
        try:
            size = Path(source).stat().st_size
        except FileNotFoundError:
            raise AudioError("not_found", "no such file") from None
        except OSError as e:
            raise AudioError("unreadable", f"the file cannot be read: {e.strerror or e}") from None
        if Path(source).is_dir():
            raise AudioError("unreadable", "a folder, not a file")
        if size == 0:
            raise AudioError("empty", "the file is empty (0 bytes)")
    try:
        return _SndReader(sf.SoundFile(source))
    except sf.LibsndfileError as e:
        rate = _wav_header_rate(source)
        if rate is not None and not MIN_RATE <= rate <= MAX_RATE:
            raise AudioError("bad_sample_rate", f"the WAV header declares a sample rate of {rate} Hz") from e
        refused = e
    except OSError as e:
        raise AudioError("unreadable", f"the file cannot be read: {e.strerror or e}") from e
    from . import av_decode  # FFmpeg only for what libsndfile cannot read

    try:
        return _AvReader(av_decode.open_stream(str(source) if isinstance(source, os.PathLike) else source))
    except AudioError as e:
        if e.code == "unsupported":
            raise AudioError("unsupported", f"not a recognised audio file ({SUPPORTED} expected)") from refused
        raise


def _wav_header_rate(source) -> int | None:
    """The sample rate a RIFF/WAVE header declares, to explain why libsndfile refused it."""
    if hasattr(source, "seek"):
        source.seek(0)
        head = source.read(64)
    else:
        with open(source, "rb") as f:
            head = f.read(64)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE" or head[12:16] != b"fmt ":
        return None
    return struct.unpack("<I", head[24:28])[0]


def _head_and_tail(source: Source, n: int = 1 << 16) -> tuple[bytes, bytes, int]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        return data[:n], data[-n:], len(data)
    if isinstance(source, (str, os.PathLike)):
        with open(source, "rb") as f:
            head = f.read(n)
            size = f.seek(0, io.SEEK_END)
            f.seek(max(0, size - n))
            return head, f.read(), size
    pos = source.tell()
    head = source.read(n)
    size = source.seek(0, io.SEEK_END)
    source.seek(max(0, size - n))
    tail = source.read()
    source.seek(pos)
    return head, tail, size


def _check_container(info: AudioInfo, source: Source) -> None:
    """Catch truncation that libsndfile forgives silently (it shortens WAV and Ogg streams)."""
    head, tail, size = _head_and_tail(source)
    if info.format in ("WAV", "WAVEX") and head[:4] == b"RIFF":
        pos = 12
        while pos + 8 <= len(head):
            cid, csize = head[pos:pos + 4], struct.unpack("<I", head[pos + 4:pos + 8])[0]
            if cid == b"data":
                if csize != 0xFFFFFFFF and pos + 8 + csize > size:
                    raise AudioError("truncated", f"the WAV file is truncated: it declares {csize} bytes "
                                                  f"of audio but holds {size - pos - 8}")
                return
            pos += 8 + csize + (csize & 1)
    if info.format == "OGG":
        last = tail.rfind(b"OggS")
        if last < 0 or last + 5 >= len(tail) or not tail[last + 5] & 0x04:
            raise AudioError("truncated", "the Ogg stream is truncated: its last page is missing")


def probe(source: Source, max_seconds: float = MAX_SECONDS) -> AudioInfo:
    """Read and sanity-check the header without decoding the audio."""
    with _open(source) as reader:
        info = reader.info
    if not MIN_RATE <= info.sample_rate <= MAX_RATE:
        raise AudioError("bad_sample_rate", f"sample rate {info.sample_rate} Hz is outside "
                                            f"{MIN_RATE}–{MAX_RATE} Hz")
    if info.channels < 1:
        raise AudioError("no_channels", "the file declares no audio channels")
    if info.frames <= 0 and info.exact:
        raise AudioError("no_audio", "the file holds no audio frames")
    if info.duration > max_seconds:
        raise AudioError("too_long", f"the audio lasts {info.duration / 60:.1f} min, "
                                     f"more than the {max_seconds / 60:.0f} min this service accepts")
    _check_container(info, source)
    return info


def downmix(block: np.ndarray) -> np.ndarray:
    """(n, channels) → (2, n) float32 by the module's channel rule."""
    channels = block.shape[1]
    if channels == 1:
        return np.repeat(block.T, 2, axis=0)
    if channels == 2:
        return block.T.copy()
    layouts = {  # (left gains, right gains) per WAV channel order
        3: ([1, 0, _MINUS_3DB], [0, 1, _MINUS_3DB]),
        4: ([1, 0, _MINUS_3DB, 0], [0, 1, 0, _MINUS_3DB]),
        5: ([1, 0, _MINUS_3DB, _MINUS_3DB, 0], [0, 1, _MINUS_3DB, 0, _MINUS_3DB]),
        6: ([1, 0, _MINUS_3DB, 0, _MINUS_3DB, 0], [0, 1, _MINUS_3DB, 0, 0, _MINUS_3DB]),
        8: ([1, 0, _MINUS_3DB, 0, _MINUS_3DB, 0, _MINUS_3DB, 0],
            [0, 1, _MINUS_3DB, 0, 0, _MINUS_3DB, 0, _MINUS_3DB]),
    }
    if channels in layouts:
        matrix = np.array(layouts[channels], dtype=np.float32)
    else:
        matrix = np.zeros((2, channels), dtype=np.float32)
        matrix[0, 0::2] = 1 / len(range(0, channels, 2))
        matrix[1, 1::2] = 1 / len(range(1, channels, 2))
    return matrix @ block.T


class StreamingResampler:
    """Polyphase resampling (scipy's resample_poly) applied block by block.

    Each block is resampled with `margin` input samples of context on both sides and the
    margins are cut off again; because block starts sit on the `down` grid and the margin
    exceeds the filter's reach, the joined output equals resample_poly on the whole signal.
    """

    def __init__(self, rate_in: int, rate_out: int = SAMPLE_RATE, step: int = BLOCK_FRAMES):
        ratio = Fraction(rate_out, rate_in)
        self.up, self.down = ratio.numerator, ratio.denominator
        reach = 10 * max(self.up, self.down) / self.up + 2  # resample_poly's half filter, in input samples
        self.margin = self.down * math.ceil(reach / self.down)
        self.step = self.down * max(1, step // self.down)
        self._buf = np.zeros((2, self.margin), dtype=np.float32)  # zeros before the start, as resample_poly
        self._consumed = 0  # input samples already emitted (excluding the leading margin)
        self._emitted = 0

    @property
    def identity(self) -> bool:
        return self.up == self.down == 1

    def _run(self, segment: np.ndarray, keep: int) -> np.ndarray:
        y = resample_poly(segment, self.up, self.down, axis=1)
        start = self.margin * self.up // self.down
        return y[:, start:start + keep].astype(np.float32, copy=False)

    def process(self, block: np.ndarray) -> Iterator[np.ndarray]:
        if self.identity:
            yield block
            return
        self._buf = np.concatenate([self._buf, block], axis=1)
        while self._buf.shape[1] >= self.step + 2 * self.margin:
            yield self._run(self._buf[:, :self.step + 2 * self.margin], self.step * self.up // self.down)
            self._emitted += self.step * self.up // self.down
            self._consumed += self.step
            self._buf = self._buf[:, self.step:]

    def finish(self) -> Iterator[np.ndarray]:
        if self.identity:
            return
        rest = self._buf.shape[1] - self.margin
        total_in = self._consumed + rest
        total_out = math.ceil(total_in * self.up / self.down)
        segment = np.concatenate([self._buf, np.zeros((2, self.margin), np.float32)], axis=1)
        if total_out > self._emitted:
            yield self._run(segment, total_out - self._emitted)
        self._buf = np.zeros((2, 0), np.float32)


def iter_decode(source: Source, max_seconds: float = MAX_SECONDS,
                block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Yield (2, n) float32 blocks at 44.1 kHz; raise AudioError on any bad input."""
    info = probe(source, max_seconds)
    if hasattr(source, "seek"):  # a file object: probe moved it
        source.seek(0)
    resampler = StreamingResampler(info.sample_rate, step=block_frames)
    decoded = 0
    ceiling = (max_seconds + 1) * info.sample_rate  # for lengths not declared, or declared wrong
    with _open(source) as reader:
        for block in reader.blocks(block_frames):
            if not np.isfinite(block).all():
                raise AudioError("non_finite", "the audio contains NaN or infinite sample values")
            decoded += block.shape[0]
            if decoded > ceiling:
                raise AudioError("too_long", f"the audio lasts more than the {max_seconds / 60:.0f} min "
                                             f"this service accepts")
            yield from resampler.process(downmix(block))
        slack = reader.slack
    # most containers declare a length; a clear shortfall means truncation (a few codec
    # frames of slack for encoder delay and padding)
    if decoded == 0:
        raise AudioError("no_audio", "the file holds no decodable audio frames")
    if info.exact and decoded < info.frames - slack:
        raise AudioError("truncated", f"the file is truncated: {decoded} of {info.frames} "
                                      f"declared frames could be decoded")
    yield from resampler.finish()


def decode(source: Source, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The whole input as a (2, n) float32 array at 44.1 kHz."""
    blocks = list(iter_decode(source, max_seconds))
    return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]
