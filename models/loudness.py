"""Level measurement that streams: sample peak, true peak and ITU-R BS.1770-4 loudness.

Integrated loudness: K-weighting (the standard's high shelf and RLB high-pass, designed for
any sample rate from their analog parameters), mean square per channel over 400 ms blocks
with 75 % overlap, an absolute gate at −70 LUFS and a relative gate 10 LU below the mean of
the blocks that pass it. Only one number per 100 ms is kept, so an hour costs 36 000 floats.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import resample_poly, sosfilt


def k_weighting(sample_rate: int) -> np.ndarray:
    """The two K-weighting biquads as an SOS array (BS.1770 stage 1 and 2)."""
    f0, gain_db, q = 1681.974450955533, 3.999843853973347, 0.7071752369554196
    k = math.tan(math.pi * f0 / sample_rate)
    vh = 10 ** (gain_db / 20)
    vb = vh ** 0.4996667741545416
    a0 = 1 + k / q + k * k
    shelf = [(vh + vb * k / q + k * k) / a0, 2 * (k * k - vh) / a0, (vh - vb * k / q + k * k) / a0,
             1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    f0, q = 38.13547087602444, 0.5003270373238773
    k = math.tan(math.pi * f0 / sample_rate)
    a0 = 1 + k / q + k * k
    highpass = [1.0, -2.0, 1.0, 1.0, 2 * (k * k - 1) / a0, (1 - k / q + k * k) / a0]
    return np.array([shelf, highpass])


class LoudnessMeter:
    """Feed (channels, n) blocks; read `.integrated` (LUFS), `.sample_peak`, `.true_peak` (linear)."""

    def __init__(self, sample_rate: int, channels: int = 2, true_peak: bool = False):
        self.sr = sample_rate
        self.step = round(0.1 * sample_rate)
        self.sos = k_weighting(sample_rate)
        self._zi = np.zeros((2, channels, 2))
        self._partial = np.zeros(channels)
        self._partial_n = 0
        self._steps: list[float] = []  # channel-summed mean square per 100 ms
        self.sample_peak = 0.0
        self.true_peak = 0.0
        self._tp = true_peak
        self._tp_tail = np.zeros((channels, 0))

    def add(self, block: np.ndarray) -> None:
        block = np.asarray(block, dtype=np.float64)
        if block.shape[-1] == 0:
            return
        self.sample_peak = max(self.sample_peak, float(np.abs(block).max()))
        if self._tp:
            # 4× oversampling; 16 samples of the previous block as context for the filter's reach
            x = np.concatenate([self._tp_tail, block], axis=1)
            self.true_peak = max(self.true_peak, float(np.abs(resample_poly(x, 4, 1, axis=1)).max()))
            self._tp_tail = x[:, -16:]
        y, self._zi = sosfilt(self.sos, block, axis=-1, zi=self._zi)
        sq = y * y
        pos = 0
        while pos < sq.shape[1]:
            take = min(self.step - self._partial_n, sq.shape[1] - pos)
            self._partial += sq[:, pos:pos + take].sum(axis=1)
            self._partial_n += take
            pos += take
            if self._partial_n == self.step:
                self._steps.append(float(self._partial.sum() / self.step))
                self._partial[:] = 0
                self._partial_n = 0

    @property
    def integrated(self) -> float:
        """Gated integrated loudness in LUFS; −inf for silence or audio under 400 ms."""
        steps = np.array(self._steps)
        if len(steps) < 4:
            return -math.inf
        blocks = np.convolve(steps, np.ones(4) / 4, mode="valid")  # 400 ms blocks, 100 ms apart
        with np.errstate(divide="ignore"):
            loud = -0.691 + 10 * np.log10(blocks)
        blocks = blocks[loud > -70.0]
        if blocks.size == 0:
            return -math.inf
        relative = -0.691 + 10 * np.log10(blocks.mean()) - 10.0
        with np.errstate(divide="ignore"):
            gated = blocks[-0.691 + 10 * np.log10(blocks) > relative]
        return float(-0.691 + 10 * np.log10(gated.mean()))


def db_to_gain(db: float) -> float:
    return 10 ** (db / 20)


def gain_to_db(gain: float) -> float:
    return 20 * math.log10(gain) if gain > 0 else -math.inf
