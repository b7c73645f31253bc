"""Production effects for the fx stem (risers, downlifters, impacts, sweeps, noise hits,
reversed cymbals, GM sound effects) and the small DSP the synthesizer shares (reverb, pan)."""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, oaconvolve, sosfilt, stft, istft

from . import fluid
from .fluid import Note, Part

SR = fluid.SAMPLE_RATE


def reverb(rng: np.random.Generator, x: np.ndarray, wet: float, rt60: float | None = None) -> np.ndarray:
    """Stereo synthetic-IR reverb: decorrelated decaying noise per channel, with pre-delay."""
    rt60 = rt60 or rng.uniform(0.4, 1.8)
    n = int(rt60 * SR)
    t = np.arange(n) / SR
    pre = int(rng.uniform(0.01, 0.03) * SR)
    lowpass = butter(2, rng.uniform(3000, 9000), fs=SR, output="sos")
    out = np.empty((2, x.shape[-1]))
    mono = x.mean(axis=0) if x.ndim == 2 else x
    for ch in range(2):
        ir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
        ir = np.concatenate([np.zeros(pre), sosfilt(lowpass, ir)])
        ir /= np.sqrt(np.sum(ir ** 2)) + 1e-12
        out[ch] = oaconvolve(mono, ir)[: x.shape[-1]]
    dry = x if x.ndim == 2 else np.stack([x, x])
    return (1 - wet) * dry + wet * out


def pan(x: np.ndarray, position: float) -> np.ndarray:
    """Constant-power pan of mono `x`; position −1 (left) … 1 (right)."""
    angle = (position + 1) * np.pi / 4
    return np.stack([np.cos(angle) * x, np.sin(angle) * x]) * np.sqrt(2)


def _swept_noise(rng: np.random.Generator, n: int, f_start: float, f_end: float, width: float) -> np.ndarray:
    noise = rng.standard_normal(n)
    f, _, z = stft(noise, SR, nperseg=1024)
    centre = np.geomspace(f_start, f_end, z.shape[1])
    mask = np.exp(-0.5 * (np.log((f[:, None] + 1) / centre[None, :]) / width) ** 2)
    return istft(z * mask, SR, nperseg=1024)[1][:n]


def riser(rng, n):
    y = _swept_noise(rng, n, rng.uniform(200, 600), rng.uniform(4000, 12000), rng.uniform(0.2, 0.6))
    y *= np.linspace(0, 1, n) ** rng.uniform(1.5, 3)
    if rng.random() < 0.4:  # a rising saw under the noise
        f = np.geomspace(rng.uniform(80, 200), rng.uniform(600, 1500), n)
        y += 0.3 * np.linspace(0, 1, n) * (2 * ((np.cumsum(f) / SR) % 1) - 1) * np.std(y) * 3
    return y


def downlifter(rng, n):
    y = _swept_noise(rng, n, rng.uniform(5000, 12000), rng.uniform(150, 500), rng.uniform(0.2, 0.6))
    return y * np.linspace(1, 0, n) ** rng.uniform(1.5, 3)


def impact(rng, n):
    t = np.arange(n) / SR
    f = rng.uniform(30, 50) + rng.uniform(40, 120) * np.exp(-t / 0.05)
    boom = np.sin(2 * np.pi * np.cumsum(f) / SR) * np.exp(-t / rng.uniform(0.2, 0.6))
    burst = sosfilt(butter(2, rng.uniform(1500, 6000), fs=SR, output="sos"), rng.standard_normal(n))
    return boom + 0.5 * burst * np.exp(-t / rng.uniform(0.03, 0.1))


def sweep(rng, n):
    up = _swept_noise(rng, n // 2, rng.uniform(200, 500), rng.uniform(3000, 8000), 0.3)
    return np.concatenate([up, up[::-1], np.zeros(n - 2 * (n // 2))]) * np.hanning(n)


def noise_hit(rng, n):
    t = np.arange(n) / SR
    lo = rng.uniform(300, 2000)
    band = butter(2, [lo, lo * rng.uniform(2, 6)], "bandpass", fs=SR, output="sos")
    return sosfilt(band, rng.standard_normal(n)) * np.exp(-t / rng.uniform(0.05, 0.25))


def reversed_crash(rng, n):
    hit = fluid.render([Part(int(rng.choice([0, 8, 16])), [Note(0.0, 2.0, int(rng.choice([49, 57, 52])), 110)],
                             drum=True, reverb=60)], n / SR, effects=False)
    return hit.mean(axis=0)[::-1]


def gm_effect(rng, n):
    notes = [Note(0.0, n / SR * rng.uniform(0.3, 0.9), int(rng.integers(48, 72)), int(rng.integers(70, 120)))]
    return fluid.render([Part(int(rng.integers(120, 128)), notes)], n / SR, effects=False).mean(axis=0)


EFFECTS = [riser, downlifter, impact, sweep, noise_hit, reversed_crash, gm_effect]


def fx_stem(rng: np.random.Generator, song_bar: float, seconds: float) -> np.ndarray:
    """2–5 effects at phrase boundaries (every 2 bars); risers end on the boundary."""
    n = int(round(seconds * SR))
    out = np.zeros((2, n))
    boundaries = np.arange(0, seconds + song_bar, 2 * song_bar)
    for _ in range(int(rng.integers(2, 6))):
        effect = EFFECTS[rng.integers(len(EFFECTS))]
        length = int(rng.uniform(0.3, 2.5) * SR) if effect in (riser, downlifter, sweep) else int(rng.uniform(0.4, 1.5) * SR)
        at = int(rng.choice(boundaries) * SR)
        start = at - length if effect in (riser, reversed_crash) else at
        y = effect(rng, length)
        y = pan(y / (np.max(np.abs(y)) + 1e-9), rng.uniform(-0.8, 0.8))
        lo, hi = max(0, start), min(n, start + length)
        if hi > lo:
            out[:, lo:hi] += y[:, lo - start:hi - start] * rng.uniform(0.5, 1.0)
    return reverb(rng, out, rng.uniform(0.1, 0.4), rng.uniform(0.5, 2.5))
