"""Stems out: per-stem conditioning, optional normalization and encoding, written as they stream.

Without normalization each block is conditioned and encoded straight into the final file.
With normalization the conditioned stem is first streamed to a float32 temporary file while
a meter listens; the gain is then known and a second streaming pass writes the final file.
Normalization is therefore applied after inference only, on the finished stem.

Encodings: `wav` is 32-bit float (lossless, no clipping for stems that exceed full scale);
`flac` is 24-bit PCM, where samples beyond ±1 are clipped and counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

from .conditioning import StreamFilter
from .loudness import LoudnessMeter, db_to_gain, gain_to_db
from .mastering import TARGET_LUFS, TruePeakLimiter

Format = Literal["wav", "flac"]
Normalize = Literal["peak", "loudness", "master"]
SUBTYPES = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24")}
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


def _open_writer(path: Path, fmt: str, sample_rate: int) -> sf.SoundFile:
    container, subtype = SUBTYPES[fmt]
    return sf.SoundFile(path, "w", sample_rate, 2, subtype=subtype, format=container)


@dataclass
class StemSink:
    name: str
    path: Path
    fmt: Format
    sample_rate: int
    filters: list[StreamFilter] = field(default_factory=list)
    normalize: Normalize | None = None

    def __post_init__(self):
        if self.fmt not in SUBTYPES:
            raise ValueError(f"unknown format {self.fmt!r}; use {' or '.join(SUBTYPES)}")
        self.report = StemReport(self.name, self.path)
        self._meter = LoudnessMeter(self.sample_rate) if self.normalize else None
        self._tmp = self.path.with_name(f".{self.path.name}.raw.wav") if self.normalize else None
        self._out = (sf.SoundFile(self._tmp, "w", self.sample_rate, 2, subtype="FLOAT", format="WAV")
                     if self.normalize else _open_writer(self.path, self.fmt, self.sample_rate))

    def _encode(self, out: sf.SoundFile, block: np.ndarray) -> None:
        if self.fmt != "wav":
            self.report.clipped_samples += int(np.count_nonzero(np.abs(block) > 1.0))
        out.write(block.T)

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
            self._out.write(block.T)
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
        self._out.close()
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
        with sf.SoundFile(self._tmp) as raw, _open_writer(self.path, self.fmt, self.sample_rate) as out:
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
