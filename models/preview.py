"""What a browser needs to show and play a finished stem without the full file: a small
preview encoding and the waveform's peaks, both made in one streaming read of the stem.

A 4-minute 5-stem result in float WAV is about 400 MB; its previews (mp3, 96 kbps) are
about 14 MB, and mp3 is the one lossy format every browser decodes. The peaks are a fixed
number of (min, max) pairs over both channels, rounded to 1/1000 of full scale, so a
waveform of any length is a few kB of JSON and can be drawn before any audio arrives.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .stems import READ_BLOCK, EncodingError, StemWriter

PREVIEW_FORMAT = "mp3"
PREVIEW_BITRATE = 96  # kbps: an MPEG-1 Layer III rate; enough to judge a stem, ~0.7 MB a minute
PEAK_BUCKETS = 1000  # a wide canvas's width; the page scales it to fit


class PeakMeter:
    """(min, max) of both channels in `buckets` equal slices of a stem of known length."""

    def __init__(self, frames: int, buckets: int = PEAK_BUCKETS):
        self.frames = frames
        self.buckets = max(1, min(buckets, frames))
        self.lo = np.zeros(self.buckets, np.float32)
        self.hi = np.zeros(self.buckets, np.float32)
        self.pos = 0

    def add(self, block: np.ndarray) -> None:
        """`block`: (n, channels) float32."""
        n = len(block)
        if not n:
            return
        # libsndfile's frame count of a lossy file can be off by a few frames: clamp to the last slice
        idx = np.minimum((np.arange(self.pos, self.pos + n, dtype=np.int64) * self.buckets) // max(self.frames, 1),
                         self.buckets - 1)
        np.minimum.at(self.lo, idx, block.min(axis=1))
        np.maximum.at(self.hi, idx, block.max(axis=1))
        self.pos += n

    def to_dict(self) -> dict:
        return {"min": [round(float(v), 3) for v in self.lo], "max": [round(float(v), 3) for v in self.hi]}


def preview(src: str | Path, dst: str | Path, fmt: str = PREVIEW_FORMAT, bitrate: int | None = PREVIEW_BITRATE,
            buckets: int = PEAK_BUCKETS) -> dict:
    """Encode `src` (a finished stereo stem) to `dst` and return its peaks:
    {"frames", "sample_rate", "min": [...], "max": [...]}."""
    with sf.SoundFile(src) as f:
        if f.channels != 2:
            raise EncodingError(f"{src}: expected a stereo stem, found {f.channels} channels")
        meter = PeakMeter(f.frames, buckets)
        with StemWriter(dst, fmt, f.samplerate, bitrate) as out:
            while True:
                block = f.read(READ_BLOCK, dtype="float32", always_2d=True)
                if not len(block):
                    break
                meter.add(block)
                out.write(np.ascontiguousarray(block.T))
        return {"frames": meter.pos, "sample_rate": f.samplerate, **meter.to_dict()}
