"""Shift averaging: the network run at several sub-hop offsets of its STFT grid, estimates averaged.

An STFT network is not shift-invariant: moving the input by less than a hop changes which
samples share a frame, so each offset gives a slightly different estimate, and their errors
are partly independent. Averaging two offsets half a hop apart raised the speech model's
SI-SDR improvement by about a quarter of a dB on held-out synthetic and real-voice clips at
twice the compute (README, "Speech, 2026-12-07 (late)"). Demucs' `shifts` is the same idea
with random, larger offsets; sub-hop offsets are the ones that change an STFT model's frames.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

# Passes per chunk where it was measured to pay; every other variant runs once. The music
# models run on the free tier's CPU replica, where twice the time per job is not free.
DEFAULT_SHIFTS: dict[str, int] = {"speech": 2}


def default_shifts(variant: str) -> int:
    return DEFAULT_SHIFTS.get(variant, 1)


def check_shifts(shifts: int) -> int:
    if shifts < 1:
        raise ValueError("shifts must be at least 1")
    return shifts


def offsets(shifts: int, hop: int) -> list[int]:
    """`shifts` offsets spread evenly over one hop: 2 → [0, hop/2]."""
    check_shifts(shifts)
    if shifts > hop:
        raise ValueError(f"at most {hop} shifts: offsets are whole samples within one hop")
    return [i * hop // shifts for i in range(shifts)]


def shift_averaged(forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, shifts: int,
                   hop: int) -> np.ndarray:
    """(B, C, n) → `forward`'s (B, S, C, n), averaged over the input delayed by each offset
    (`delayed_forward`: every pass sees the whole chunk)."""
    delays = offsets(shifts, hop)
    if shifts == 1:
        return forward(batch)  # the network's own output, untouched
    total = sum(delayed_forward(forward, batch, k) for k in delays)
    return total / np.float32(shifts)


def delayed_forward(forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, k: int) -> np.ndarray:
    """`forward` of `batch` delayed by `k` samples (zeros in front), cut back to the original samples."""
    n, lead = batch.shape[-1], [(0, 0)] * (batch.ndim - 1)
    return forward(np.pad(batch, lead + [(k, 0)]))[..., k:k + n]
