"""Shift averaging (models/shifts.py) and the engine's use of it: each pass is cut back onto the
input's own samples, a frame-grid ripple cancels, and speech runs two passes as served."""

import numpy as np
import pytest
import soundfile as sf
import torch

from models.engine import SeparationEngine
from models.shifts import offsets, shift_averaged

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)
HOP = 1024


def test_offsets_spread_over_one_hop():
    assert offsets(1, HOP) == [0]
    assert offsets(2, HOP) == [0, 512]
    assert offsets(4, HOP) == [0, 256, 512, 768]
    with pytest.raises(ValueError):
        offsets(0, HOP)


def gridded(x: np.ndarray) -> np.ndarray:
    """A stand-in for an STFT network: 2 stems, each the input under a gain that ripples with
    the frame grid (counted from the input's first sample), as a frame-based model's errors do."""
    t = np.arange(x.shape[-1])
    ripple = np.sin(np.pi * (t % HOP) / HOP) ** 2  # a Hann period per hop: w(t) + w(t + hop/2) = 1
    return np.stack([x * ripple, x * (1 - ripple)], axis=1)


def test_half_hop_shifts_cancel_a_frame_grid_ripple():
    x = np.random.default_rng(0).standard_normal((2, 2, 5000)).astype(np.float32)
    once = shift_averaged(gridded, x, 1, HOP)
    assert not np.allclose(once[:, 0], x / 2, atol=1e-3)  # one pass keeps the ripple
    twice = shift_averaged(gridded, x, 2, HOP)
    # only if every pass is cut back onto the input's own samples does the ripple average to ½
    np.testing.assert_allclose(twice[:, 0], x / 2, atol=1e-5)
    np.testing.assert_allclose(twice[:, 1], x / 2, atol=1e-5)
    assert twice.shape == (2, 2, 2, 5000)


def test_a_shift_invariant_model_is_unchanged():
    x = np.random.default_rng(1).standard_normal((1, 2, 3000)).astype(np.float32)
    def gain(b):
        return np.stack([0.3 * b, 0.7 * b], axis=1)
    np.testing.assert_allclose(shift_averaged(gain, x, 2, HOP), gain(x), atol=1e-6)


def engine(variant: str, **kw) -> SeparationEngine:
    return SeparationEngine(variant, random_weights=True, chunk_seconds=2.0, overlap_seconds=0.25,
                            config_overrides=TINY, **kw)


def test_speech_runs_two_passes_by_default_and_music_one(tmp_path):
    assert engine("speech").shifts == 2
    assert engine("2stem").shifts == 1 and engine("5stem").shifts == 1
    with pytest.raises(ValueError):
        engine("speech", shifts=0)


def test_the_engine_averages_the_passes_a_user_could_run_by_hand(tmp_path):
    """A clip shorter than a chunk: the served output is the mean of one pass on the clip and
    one on the clip delayed by half a hop, cut back; the job's metadata says 2 shifts."""
    rng = np.random.default_rng(2)
    x = (0.1 * rng.standard_normal((2, 30000))).astype(np.float32)
    eng = engine("speech")
    torch.manual_seed(3)  # an untrained network masks every bin alike, and so is shift-invariant: perturb it
    with torch.no_grad():
        for p in eng.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    hop = eng.config.hop
    served = eng.separate(x, tmp_path / "served")
    assert served.metadata["shifts"] == 2
    eng.shifts = 1
    a = eng.separate(x, tmp_path / "a")
    b = eng.separate(np.pad(x, ((0, 0), (hop // 2, 0))), tmp_path / "b")
    for stem in eng.stems:
        y = sf.read(served.stems[stem], dtype="float32", always_2d=True)[0].T
        ya = sf.read(a.stems[stem], dtype="float32", always_2d=True)[0].T
        yb = sf.read(b.stems[stem], dtype="float32", always_2d=True)[0].T[:, hop // 2:]
        assert y.shape == x.shape
        assert np.abs(ya - yb).max() > 1e-3  # the two passes differ: the average is not trivial
        np.testing.assert_allclose(y, (ya + yb) / 2, atol=2e-4)
