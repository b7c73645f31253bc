"""A mastering chain on the mixture that keeps the stems summing exactly to it.

Real releases are EQ'd, bus-compressed, limited to −14…−8 LUFS and often lossy; a network
that has only heard clean sums of stems meets a different signal in users' files. Every
step here is applied so that stems still add up to the mixture the network sees:
- linear steps (EQ tilt, stereo width, a shared room send, a low-pass) are applied to
  every stem alike;
- dynamic steps (bus compressor, brickwall limiter) compute their gain curve from the
  mixture and apply that same curve to every stem;
- the lossy round trip (MP3, through libsndfile's LAME/mpg123) is applied to every stem,
  and the mixture is defined as the sum of the coded stems: not bit-identical to coding the
  mix, but with the codec's band limit, pre-echo and spectral holes in every part.
"""

from __future__ import annotations

import io

import numpy as np
import soundfile as sf
from scipy.ndimage import minimum_filter1d, uniform_filter1d
from scipy.signal import lfilter

from ...loudness import LoudnessMeter
from . import eq, rooms

SR = 44100


def _apply_all(stems: dict[str, np.ndarray], fn) -> dict[str, np.ndarray]:
    return {k: fn(v) for k, v in stems.items()}


def _mix(stems: dict[str, np.ndarray]) -> np.ndarray:
    return sum(stems.values())


def loudness(x: np.ndarray) -> float:
    meter = LoudnessMeter(SR, x.shape[0])
    meter.add(x)
    return meter.integrated


def width(x: np.ndarray, amount: float) -> np.ndarray:
    """Scale the side signal: 0 mono, 1 unchanged, > 1 wider."""
    mid, side = (x[0] + x[1]) / 2, (x[0] - x[1]) / 2 * amount
    return np.stack([mid + side, mid - side])


def compressor_gain(mix: np.ndarray, threshold_db: float, ratio: float, window_s: float, smooth_s: float) -> np.ndarray:
    """Per-sample gain of a feed-forward RMS compressor driven by the mixture."""
    power = uniform_filter1d(np.mean(mix ** 2, axis=0), max(1, int(window_s * SR)))
    level = 10 * np.log10(power + 1e-12)
    reduction = np.minimum(0.0, (threshold_db - level) * (1 - 1 / ratio))
    a = np.exp(-1 / (smooth_s * SR))
    smoothed = lfilter([1 - a], [1, -a], reduction)
    return 10 ** (smoothed / 20)


def limiter_gain(mix: np.ndarray, ceiling: float, lookahead_s: float = 0.005) -> np.ndarray:
    """Per-sample gain that keeps |mix| under `ceiling`: the needed gain, held by a minimum
    over ±lookahead, then averaged over one lookahead; the average of values that are each
    at most the need at a peak is itself at most that need, so no peak escapes."""
    peak = np.abs(mix).max(axis=0)
    need = np.minimum(1.0, ceiling / np.maximum(peak, 1e-12))
    w = max(1, int(lookahead_s * SR))
    held = minimum_filter1d(need, 2 * w + 1)
    return np.minimum(uniform_filter1d(held, w), need)


def mp3_round_trip(x: np.ndarray, bitrate_mode: float) -> np.ndarray:
    buf = io.BytesIO()
    sf.write(buf, x.T, SR, format="MP3", compression_level=bitrate_mode)
    buf.seek(0)
    y = sf.read(buf, dtype="float64", always_2d=True)[0].T
    y = y[:, : x.shape[1]]
    return np.pad(y, ((0, 0), (0, x.shape[1] - y.shape[1])))


def master(rng: np.random.Generator, stems: dict[str, np.ndarray], strength: float = 1.0
           ) -> tuple[dict[str, np.ndarray], dict]:
    """The chain, drawn per clip; `strength` 0 leaves the stems alone."""
    info: dict = {}
    if strength <= 0:
        return stems, info
    tilt = eq.tilt(rng, 3.0)
    stems = _apply_all(stems, lambda x: eq.apply(tilt, x))
    w = float(rng.uniform(0.7, 1.3))
    stems = _apply_all(stems, lambda x: width(x, w))
    info["width"] = round(w, 2)
    if rng.random() < 0.35:  # a shared room on the bus
        ir = rooms.impulse_response(rng, rt60=float(rng.uniform(0.3, 1.5)), drr_db=float(rng.uniform(8, 20)), channels=2)
        stems = _apply_all(stems, lambda x: rooms.apply(x, ir))
        info["bus_room"] = True
    if rng.random() < 0.2:
        cutoff = float(rng.uniform(11000, 19000))
        lp = eq.lowpass(cutoff, 4)
        stems = _apply_all(stems, lambda x: eq.apply(lp, x))
        info["lowpass_hz"] = round(cutoff)

    mix = _mix(stems)
    if rng.random() < 0.75:
        g = compressor_gain(mix, threshold_db=float(rng.uniform(-28, -16)), ratio=float(rng.uniform(1.5, 4)),
                            window_s=float(rng.uniform(0.01, 0.05)), smooth_s=float(rng.uniform(0.03, 0.2)))
        stems = _apply_all(stems, lambda x: x * g)
        info["compressor"] = True
    target = float(rng.uniform(-14, -8))
    mix = _mix(stems)
    current = loudness(mix)
    if np.isfinite(current):
        gain = 10 ** ((target - current) / 20)
        stems = _apply_all(stems, lambda x: x * gain)
    ceiling = 10 ** (float(rng.uniform(-1.0, -0.1)) / 20)
    g = limiter_gain(_mix(stems), ceiling)
    stems = _apply_all(stems, lambda x: x * g)
    info["lufs_target"] = round(target, 1)
    if rng.random() < 0.25:
        quality = float(rng.uniform(0.2, 0.7))  # libsndfile's VBR quality: 0 best … 1 smallest
        stems = _apply_all(stems, lambda x: mp3_round_trip(x, quality))
        info["mp3_quality"] = round(quality, 2)
    return stems, info
