"""Stems out: per-stem conditioning, optional normalization and encoding, written as they stream.

Without normalization each block is conditioned and encoded straight into the final file.
With normalization the conditioned stem is first streamed to a float32 temporary file while
a meter listens; the gain is then known and a second streaming pass writes the final file.
Normalization is therefore applied after inference only, on the finished stem.

Encodings (all through libsndfile, which links LAME and libopus):
- `wav`: 32-bit float (lossless, no clipping for stems that exceed full scale);
- `flac`: 24-bit PCM, where samples beyond ±1 are clipped and counted;
- `mp3`: MPEG-1 Layer III at a constant bitrate (default 320 kbps), 44.1 kHz, gapless
  (the LAME header records the encoder delay and padding, so it decodes to the input's length);
- `opus`: Ogg Opus (default 160 kbps). Opus codes only at 48 kHz, so the stem is resampled to
  48 kHz on the way in (streamed, with the decoder's polyphase resampler): it decodes to
  48 kHz, as every Opus file does, with the input's duration. Both lossy codecs take float
  samples: levels above full scale are carried, not clipped, as in float WAV (a player that
  decodes to 16-bit clips them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from .audio import StreamingResampler
from .conditioning import StreamFilter
from .formats import (CLIPPING, DEFAULT_BITRATE, FORMATS, MEDIA_TYPES, MP3_BITRATES, OPUS_BITRATES,  # noqa: F401
                      OPUS_RATE, SUBTYPES, EncodingError, check_encoding)
from .loudness import LoudnessMeter, db_to_gain, gain_to_db
from .mastering import TARGET_LUFS, TruePeakLimiter

Format = Literal["wav", "flac", "mp3", "opus"]
Normalize = Literal["peak", "loudness", "master"]
PEAK_TARGET_DB = -1.0
LOUDNESS_TARGET_LUFS = -14.0
READ_BLOCK = 1 << 18
WRITE_BLOCK = 1 << 16  # filter and encode in sub-blocks: small temporaries, a flat memory profile


@dataclass
class StemReport:
    name: str
    path: Path
    frames: int = 0
    clipped_samples: int = 0
    gain_db: float | None = None
    loudness_lufs: float | None = None
    peak_dbfs: float | None = None
    true_peak_dbtp: float | None = None

    def to_dict(self) -> dict:
        return {"name": self.name, "file": self.path.name, "frames": self.frames,
                "clipped_samples": self.clipped_samples, "gain_db": self.gain_db,
                "loudness_lufs": self.loudness_lufs, "peak_dbfs": self.peak_dbfs,
                "true_peak_dbtp": self.true_peak_dbtp}


def _compression_level(fmt: str, kbps: int) -> float:
    """libsndfile sets lossy bitrates through a 'compression level' in [0, 1]; these invert its
    mappings (mpeg_l3_encoder_set_quality: CBR kbps = 320 − level·288 at 32–48 kHz; ogg_opus:
    bps per channel = 6000 + (1 − level)·250000). Half a unit of slack survives its truncation."""
    if fmt == "mp3":
        return min(1.0, max(0.0, (320 - kbps - 0.5) / 288))
    per_channel = kbps * 1000 / 2
    return min(1.0, max(0.0, 1 - (per_channel - 6000 + 0.5) / 250000))


class StemWriter:
    """One encoded stereo file, written block by block: (2, n) float32 at `sample_rate` in."""

    def __init__(self, path: str | Path, fmt: str, sample_rate: int, bitrate: int | None = None):
        self.fmt = fmt
        self.bitrate = check_encoding(fmt, bitrate)
        container, subtype = SUBTYPES[fmt]
        rate, extra = sample_rate, {}
        self._resampler = None
        if fmt == "opus" and sample_rate != OPUS_RATE:
            self._resampler = StreamingResampler(sample_rate, OPUS_RATE)
            rate = OPUS_RATE
        if self.bitrate is not None:
            extra["compression_level"] = _compression_level(fmt, self.bitrate)
            if fmt == "mp3":
                extra["bitrate_mode"] = "CONSTANT"
        self._file = sf.SoundFile(path, "w", rate, 2, subtype=subtype, format=container, **extra)

    def write(self, block: np.ndarray) -> None:
        if self._resampler is None:
            self._file.write(block.T)
            return
        for y in self._resampler.process(block):
            self._file.write(y.T)

    def close(self, flush: bool = True) -> None:
        if flush and self._resampler is not None and not self._file.closed:
            for y in self._resampler.finish():
                self._file.write(y.T)
        self._file.close()

    def __enter__(self) -> "StemWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def transcode(src: str | Path, dst: str | Path, fmt: str, bitrate: int | None = None) -> int:
    """Re-encode a finished stem file (e.g. a small preview), streamed; returns frames written."""
    frames = 0
    with sf.SoundFile(src) as f:
        if f.channels != 2:
            raise EncodingError(f"{src}: expected a stereo stem, found {f.channels} channels")
        with StemWriter(dst, fmt, f.samplerate, bitrate) as out:
            while True:
                block = f.read(READ_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                out.write(np.ascontiguousarray(block.T))
                frames += len(block)
    return frames


@dataclass
class StemSink:
    name: str
    path: Path
    fmt: Format
    sample_rate: int
    filters: list[StreamFilter] = field(default_factory=list)
    normalize: Normalize | None = None
    bitrate: int | None = None

    def __post_init__(self):
        self.bitrate = check_encoding(self.fmt, self.bitrate)
        self.report = StemReport(self.name, self.path)
        self._meter = LoudnessMeter(self.sample_rate) if self.normalize else None
        self._tmp = self.path.with_name(f".{self.path.name}.raw.wav") if self.normalize else None
        self._out = (StemWriter(self._tmp, "wav", self.sample_rate) if self.normalize
                     else StemWriter(self.path, self.fmt, self.sample_rate, self.bitrate))

    def _encode(self, out: StemWriter, block: np.ndarray) -> None:
        if self.fmt in CLIPPING:
            self.report.clipped_samples += int(np.count_nonzero(np.abs(block) > 1.0))
        out.write(block)

    def _emit(self, block: np.ndarray) -> None:
        for f in self.filters:
            block = f.process(block)
        self._sink(block)

    def _sink(self, block: np.ndarray) -> None:
        if block.shape[-1] == 0:
            return
        self.report.frames += block.shape[-1]
        if self._meter:
            self._meter.add(block)
            self._out.write(block)
        else:
            self._encode(self._out, block)

    def write(self, block: np.ndarray) -> None:
        for start in range(0, block.shape[-1], WRITE_BLOCK):
            self._emit(block[:, start:start + WRITE_BLOCK])

    def close(self) -> StemReport:
        # drain each filter's latency through the filters after it
        for i, f in enumerate(self.filters):
            tail = f.finish()
            for g in self.filters[i + 1:]:
                tail = g.process(tail)
            self._sink(tail)
        self._out.close()
        if self.normalize:
            self._second_pass()
        return self.report

    def abort(self) -> None:
        self._out.close(flush=False)
        for p in (self._tmp, self.path):
            if p is not None and p.exists():
                os.unlink(p)

    def _gain(self) -> float:
        peak, lufs = self._meter.sample_peak, self._meter.integrated
        if peak == 0:
            return 1.0
        if self.normalize == "master":  # the limiter takes care of the peaks
            return db_to_gain(TARGET_LUFS - lufs) if np.isfinite(lufs) else 1.0
        ceiling = db_to_gain(PEAK_TARGET_DB) / peak
        if self.normalize == "peak" or not np.isfinite(lufs):
            return ceiling
        return min(ceiling, db_to_gain(LOUDNESS_TARGET_LUFS - lufs))

    def _second_pass(self) -> None:
        gain = self._gain()
        limiter = TruePeakLimiter(self.sample_rate) if self.normalize == "master" else None
        out_meter = LoudnessMeter(self.sample_rate, true_peak=True)
        with sf.SoundFile(self._tmp) as raw, StemWriter(self.path, self.fmt, self.sample_rate, self.bitrate) as out:
            def emit(block: np.ndarray) -> None:
                out_meter.add(block)
                self._encode(out, block)

            while True:
                block = raw.read(READ_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                y = block.T * np.float32(gain)
                emit(limiter.process(y) if limiter else y)
            if limiter:
                emit(limiter.finish())
        os.unlink(self._tmp)
        lufs = out_meter.integrated
        self.report.gain_db = round(gain_to_db(gain), 3)
        self.report.loudness_lufs = round(lufs, 2) if np.isfinite(lufs) else None
        self.report.peak_dbfs = round(gain_to_db(out_meter.sample_peak), 3) if out_meter.sample_peak else None
        self.report.true_peak_dbtp = round(gain_to_db(out_meter.true_peak), 3) if out_meter.true_peak else None
