"""Room impulse responses, synthesized: direct sound, early reflections, a decaying tail.

No measured responses ship in Debian's packages, so the room is modelled the way a
shoebox simulation comes out at a glance: a direct impulse, a few sparse early reflections
(2–40 ms, amplitudes falling with path length, random signs), then a diffuse tail of
decaying noise whose high band dies faster than its low band (air and wall absorption).
RT60 and the direct-to-reverberant ratio are drawn per room. Linear and time-invariant, so
applying the same room to every part of a mixture keeps the parts summing to the whole.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, oaconvolve, sosfilt

SR = 44100


def impulse_response(rng: np.random.Generator, rt60: float | None = None, drr_db: float | None = None,
                     channels: int = 1) -> np.ndarray:
    """(channels, n) RIR with unit direct impulse at 0; channels share the early part."""
    rt60 = rt60 if rt60 is not None else float(rng.uniform(0.15, 1.2))
    drr_db = drr_db if drr_db is not None else float(rng.uniform(-3, 15))
    n = int((rt60 + 0.05) * SR)
    t = np.arange(n) / SR
    early = np.zeros(n)
    early[0] = 1.0
    for _ in range(int(rng.integers(4, 16))):
        d = rng.uniform(0.002, 0.04)
        early[int(d * SR)] += rng.choice([-1, 1]) * rng.uniform(0.2, 0.7) * 0.004 / max(d, 0.004)
    lo = butter(2, rng.uniform(400, 1500), fs=SR, output="sos")
    out = np.empty((channels, n))
    onset = np.clip((t - rng.uniform(0.005, 0.02)) / 0.01, 0, 1)
    for c in range(channels):
        noise = rng.standard_normal(n)
        low = sosfilt(lo, noise)
        high = noise - low
        tail = (low * np.exp(-6.9 * t / rt60) + high * np.exp(-6.9 * t / (rt60 * rng.uniform(0.35, 0.7)))) * onset
        direct_e = np.sum(early ** 2)
        tail *= np.sqrt(direct_e / (np.sum(tail ** 2) + 1e-12) * 10 ** (-drr_db / 10))
        out[c] = early + tail
    return out


def apply(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """Convolve (n,) or (C, n) `x` with a (C', m) response, keeping x's length. A mono `x`
    with a multi-channel response becomes multi-channel."""
    if x.ndim == 1:
        return np.stack([oaconvolve(x, h)[: x.size] for h in ir]) if ir.shape[0] > 1 else oaconvolve(x, ir[0])[: x.size]
    return np.stack([oaconvolve(x[c], ir[c % ir.shape[0]])[: x.shape[-1]] for c in range(x.shape[0])])
