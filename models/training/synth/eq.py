"""Linear colouring: microphone and speaker EQ, tilt, band limits (RBJ biquads as SOS).

All of it is linear and time-invariant, so a colouring applied to every part of a mixture
keeps the parts summing exactly to the coloured whole.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

SR = 44100


def _biquad(b: list[float], a: list[float]) -> np.ndarray:
    return np.array([[b[0] / a[0], b[1] / a[0], b[2] / a[0], 1.0, a[1] / a[0], a[2] / a[0]]])


def peaking(f0: float, gain_db: float, q: float) -> np.ndarray:
    a_, w = 10 ** (gain_db / 40), 2 * np.pi * f0 / SR
    alpha = np.sin(w) / (2 * q)
    return _biquad([1 + alpha * a_, -2 * np.cos(w), 1 - alpha * a_], [1 + alpha / a_, -2 * np.cos(w), 1 - alpha / a_])


def shelf(f0: float, gain_db: float, high: bool) -> np.ndarray:
    a_, w = 10 ** (gain_db / 40), 2 * np.pi * f0 / SR
    alpha = np.sin(w) / 2 * np.sqrt(2)
    c, s2 = np.cos(w), 2 * np.sqrt(a_) * alpha
    sign = 1 if high else -1
    b = [a_ * ((a_ + 1) + sign * (a_ - 1) * c + s2), -2 * sign * a_ * ((a_ - 1) + sign * (a_ + 1) * c),
         a_ * ((a_ + 1) + sign * (a_ - 1) * c - s2)]
    a = [(a_ + 1) - sign * (a_ - 1) * c + s2, 2 * sign * ((a_ - 1) - sign * (a_ + 1) * c),
         (a_ + 1) - sign * (a_ - 1) * c - s2]
    return _biquad(b, a)


def microphone(rng: np.random.Generator) -> np.ndarray:
    """A random microphone/speaker colouring: low cut, a presence or body bump, a high shelf."""
    sos = [butter(2, rng.uniform(40, 220), "highpass", fs=SR, output="sos"),
           peaking(rng.uniform(150, 600), rng.uniform(-4, 5), rng.uniform(0.5, 1.5)),
           peaking(rng.uniform(1500, 6000), rng.uniform(-5, 6), rng.uniform(0.5, 2.0)),
           shelf(rng.uniform(4000, 10000), rng.uniform(-9, 4), high=True)]
    return np.concatenate(sos)


def tilt(rng: np.random.Generator, max_db: float = 3.0) -> np.ndarray:
    """A gentle spectral tilt: opposite shelves around 1 kHz."""
    g = rng.uniform(-max_db, max_db)
    return np.concatenate([shelf(250, -g / 2, high=False), shelf(4000, g / 2, high=True)])


def lowpass(cutoff: float, order: int = 8) -> np.ndarray:
    return butter(order, min(cutoff, 0.45 * SR), fs=SR, output="sos")


def apply(sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    return sosfilt(sos, x, axis=-1)


def band_limit(rng: np.random.Generator) -> float | None:
    """The bandwidth of a recording's original sample rate: telephone-like 8 kHz, 11 and
    16 kHz, or full band (None). Returns a low-pass cutoff in Hz."""
    r = rng.random()
    if r < 0.55:
        return None
    return float(rng.choice([3800.0, 5300.0, 7600.0, 11000.0, 15000.0]))
