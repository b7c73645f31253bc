"""Chunking and overlap-add: exact reconstruction, crossfades that sum to one, exact lengths."""

import numpy as np
import pytest

from models.apply import ChunkPlan, apply_chunked, crossfade, fade_in

PLAN = ChunkPlan(chunk=1000, overlap=100)  # hop 900


def identity(chunk):
    return np.stack([chunk, 2 * chunk])  # two "stems": the input and twice the input


def run(x, plan=PLAN, block=337):
    blocks = (x[:, i:i + block] for i in range(0, x.shape[1], block))
    return np.concatenate(list(apply_chunked(identity, blocks, plan, x.shape[1])), axis=-1)


@pytest.mark.parametrize("length", [1, 99, 100, 101, 999, 1000, 1001, 1800, 1900, 2700, 2800, 3701, 9000, 9999])
def test_identity_model_reconstructs_input(length):
    x = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    y = run(x)
    assert y.shape == (2, 2, length)
    np.testing.assert_allclose(y[0], x, atol=1e-6)
    np.testing.assert_allclose(y[1], 2 * x, atol=1e-6)


def test_real_settings_long_input():
    plan = ChunkPlan.from_seconds(18.0, 1.75, 44100)
    assert (plan.chunk, plan.overlap) == (793800, 77175)
    length = 3 * plan.hop + 100000  # 4 chunks, the last one partial
    x = np.random.default_rng(0).standard_normal((2, length)).astype(np.float32)
    y = run(x, plan, block=1 << 17)
    assert plan.count(length) == 4
    np.testing.assert_allclose(y[0], x, atol=1e-6)


def test_crossfades_sum_to_exactly_one():
    rise = fade_in(77175)
    assert np.all(np.diff(rise) > 0) and 0 < rise[0] < 1e-6 and rise[-1] > 1 - 1e-6
    out = crossfade(1000, 100, first=False, last=False)[900:]
    into = crossfade(1000, 100, first=False, last=False)[:100]
    assert np.array_equal(out + into, np.ones(100))


def test_chunk_count_and_last_chunk_longer_than_overlap():
    for length in range(1, 5000, 7):
        n = PLAN.count(length)
        last = length - (n - 1) * PLAN.hop
        assert 0 < last <= PLAN.chunk
        assert n == 1 or last > PLAN.overlap


def test_progress_reports_every_chunk():
    seen = []
    x = np.zeros((2, 2800), np.float32)
    list(apply_chunked(identity, [x], PLAN, 2800, lambda d, t: seen.append((d, t))))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_overlap_must_be_less_than_half_a_chunk():
    with pytest.raises(ValueError):
        ChunkPlan(chunk=100, overlap=50)
