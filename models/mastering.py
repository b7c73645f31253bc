"""The enhance chain's mastering: 80 Hz high-pass, −16 LUFS integrated, −1 dBTP ceiling.

The high-pass runs in the first (streaming) pass, before loudness is measured; the gain and
the true-peak limiter run in the second pass over the finished stem (see `stems.py`).

Limiter: the required gain at each sample is ceiling / true peak, the true peak being the
largest magnitude of the 4× oversampled signal (ITU-R BS.1770 annex 2) around that sample
across channels. The applied gain is that requirement's running minimum over W samples,
averaged over the next W: every averaged term's window contains the sample itself, so the
applied gain never exceeds what the sample needs, and it moves smoothly (no clicks). W is
5 ms; the look-ahead this needs (W − 1 samples, plus 16 for the oversampling filter) is
compensated like any other filter latency. A 0.2 dB margin covers the inter-sample
peaks that the gain change itself creates.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import resample_poly

from .conditioning import Highpass, StreamFilter

TARGET_LUFS = -16.0
CEILING_DBTP = -1.0
HIGHPASS_HZ = 80.0
_TP_REACH = 16  # samples of context the 4× oversampling filter needs on each side
_MARGIN_DB = 0.2


def enhance_highpass(sample_rate: int) -> StreamFilter:
    return Highpass(HIGHPASS_HZ, sample_rate)


class TruePeakLimiter(StreamFilter):
    def __init__(self, sample_rate: int, ceiling_db: float = CEILING_DBTP, window_ms: float = 5.0):
        self.w = max(2, round(window_ms * sample_rate / 1000))
        self.latency = self.w - 1 + _TP_REACH
        super().__init__()
        self.ceiling = 10 ** ((ceiling_db - _MARGIN_DB) / 20)
        self._hist = np.zeros((2, 2 * self.w + 2 * _TP_REACH))
        self.reduced = 0  # samples whose gain was lowered (reported, not needed)

    def _filter(self, block: np.ndarray) -> np.ndarray:
        h, n, w = self._hist.shape[1], block.shape[1], self.w
        x = np.concatenate([self._hist, block], axis=1)
        over = np.abs(resample_poly(x, 4, 1, axis=1)).reshape(2, -1, 4).max(axis=(0, 2))
        need = np.minimum(1.0, self.ceiling / np.maximum(over, 1e-12))
        # outputs are the samples p in [h - latency, h - latency + n) of x
        first = h - self.latency
        lo = first - (w - 1)  # the earliest need[] any of them looks at
        mins = sliding_window_view(need[lo:first + n + w - 1], w).min(axis=1)  # mins[i] = min need[lo+i .. lo+i+w-1]
        sums = np.concatenate([[0.0], np.cumsum(mins)])
        gain = (sums[w:w + n] - sums[:n]) / w  # mean of mins over the w windows that contain p
        self.reduced += int(np.count_nonzero(gain < 1.0))
        self._hist = x[:, -h:]
        return x[:, first:first + n] * gain
