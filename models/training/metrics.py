"""Separation metrics on whole clips.

- uSDR: 10·log10(Σ s² / Σ (s − ŝ)²) over the whole clip and both channels (the project's
  target metric; "SDR" in the README's tables).
- SI-SDR: scale-invariant SDR per channel, averaged over channels.
- BSS-eval SDR: fast_bss_eval's `sdr` (512-tap distortion filter) per channel with all stems
  as sources, averaged over channels; NaN where a reference stem is silent.
- Oracle ideal ratio masks with the mixture's phase on the model's own STFT grid:
  M_s = |S_s|^p / Σ_j |S_j|^p, p = 1 (magnitude) or 2 (power, Wiener-like).
"""

from __future__ import annotations

import numpy as np
import torch

from ..spec import istft, stft

EPS = 1e-12


def usdr(ref: np.ndarray, est: np.ndarray) -> float:
    return float(10 * np.log10((np.sum(ref.astype(np.float64) ** 2) + EPS)
                               / (np.sum((ref.astype(np.float64) - est) ** 2) + EPS)))


def si_sdr(ref: np.ndarray, est: np.ndarray) -> float:
    out = []
    for r, e in zip(np.atleast_2d(ref).astype(np.float64), np.atleast_2d(est).astype(np.float64)):
        alpha = np.dot(e, r) / (np.dot(r, r) + EPS)
        target = alpha * r
        out.append(10 * np.log10((np.sum(target ** 2) + EPS) / (np.sum((e - target) ** 2) + EPS)))
    return float(np.mean(out))


def bss_sdr(refs: np.ndarray, ests: np.ndarray) -> np.ndarray:
    """refs, ests: (S, 2, n) → (S,) BSS-eval SDR, NaN for silent references."""
    import fast_bss_eval

    out = np.full((refs.shape[1], refs.shape[0]), np.nan)
    active = np.array([np.sum(r ** 2) > 1e-10 for r in refs])
    if active.sum() == 0:
        return out.mean(axis=0)
    for ch in range(refs.shape[1]):
        r = refs[active, ch].astype(np.float64)
        e = ests[active, ch].astype(np.float64)
        out[ch, active] = fast_bss_eval.sdr(r, e, filter_length=512, load_diag=1e-10)
    return out.mean(axis=0)


def oracle_irm(refs: np.ndarray, n_fft: int, hop: int, power: float) -> np.ndarray:
    """(S, 2, n) references → (S, 2, n) oracle-mask estimates from their mixture."""
    r = torch.from_numpy(refs.astype(np.float32))
    spec = stft(r, n_fft, hop)
    mix = spec.sum(0)
    mag = spec.abs() ** power
    mask = mag / (mag.sum(0, keepdim=True) + 1e-12)
    return istft(mask * mix, n_fft, hop, refs.shape[-1]).numpy()
