"""Stem post-conditioning measured on signals, and its continuity across streamed blocks."""

import numpy as np
import pytest

from audio_fixtures import SR, tone
from models.conditioning import Highpass, MonoBelow, conditioner
from models.loudness import LoudnessMeter


def stream(filt, x, block=30000):
    parts = [filt.process(x[:, i:i + block]) for i in range(0, x.shape[1], block)]
    return np.concatenate(parts + [filt.finish()], axis=1)


def level_db(x):
    return 10 * np.log10(np.mean(x.astype(np.float64) ** 2))


def steady(x):  # skip filter start-up transients
    return x[..., SR // 2:]


def test_vocal_highpass_cuts_15hz_keeps_1khz():
    x15, x1k = np.stack([tone(15, 3)] * 2), np.stack([tone(1000, 3)] * 2)
    assert level_db(steady(x15)) - level_db(steady(stream(conditioner("vocals", SR), x15))) >= 20
    assert abs(level_db(steady(x1k)) - level_db(steady(stream(conditioner("vocals", SR), x1k)))) <= 0.1


def test_bass_mono_below_120_keeps_stereo_above_300():
    # different content per side at 60 Hz and at 500 Hz
    left = tone(60, 3, amp=0.4) + tone(500, 3, amp=0.2)
    right = tone(60, 3, amp=0.1) - tone(500, 3, amp=0.2)
    x = np.stack([left, right])
    y = stream(conditioner("bass", SR), x)
    assert y.shape == x.shape
    side = steady(y[0] - y[1])
    lows = np.fft.rfft(side)
    freqs = np.fft.rfftfreq(side.size, 1 / SR)
    at = lambda f: np.abs(lows[np.argmin(np.abs(freqs - f))])  # noqa: E731
    ref_side = np.fft.rfft(steady(x[0] - x[1]))
    ref_at = lambda f: np.abs(ref_side[np.argmin(np.abs(freqs - f))])  # noqa: E731
    assert 20 * np.log10(at(60) / ref_at(60)) < -40  # channels identical below 120 Hz
    assert abs(20 * np.log10(at(500) / ref_at(500))) < 0.1  # stereo difference kept above 300 Hz
    np.testing.assert_allclose(y[0] + y[1], x[0] + x[1], atol=1e-5)  # L+R untouched


def test_drums_and_instruments_untouched():
    for stem in ("drums", "instrumental", "instruments", "fx", "speech", "noise"):
        assert conditioner(stem, SR) is None


@pytest.mark.parametrize("make", [lambda: Highpass(30, SR), lambda: MonoBelow(120, 300, SR)])
@pytest.mark.parametrize("block,length", [(1, 3000), (517, 100_003), (4096, 100_003), (30000, 100_003)])
def test_streaming_equals_whole_signal(make, block, length):
    x = np.random.default_rng(1).standard_normal((2, length)).astype(np.float32) * 0.1
    whole = stream(make(), x, block=length)
    np.testing.assert_allclose(stream(make(), x, block), whole, atol=1e-6)


def test_short_input_keeps_its_length():
    x = np.ones((2, 37), np.float32)
    assert stream(MonoBelow(120, 300, SR), x).shape == (2, 37)


def test_bs1770_reference_tone():
    # BS.1770: a 0 dBFS 997 Hz sine in one channel reads −3.01 LKFS
    x = np.stack([tone(997, 10, amp=1.0), np.zeros(10 * SR, np.float32)])
    meter = LoudnessMeter(SR)
    for i in range(0, x.shape[1], 12345):
        meter.add(x[:, i:i + 12345])
    assert abs(meter.integrated - (-3.01)) < 0.05


def test_loudness_gating_ignores_silence():
    x = np.concatenate([tone(997, 5, amp=0.1), np.zeros(20 * SR, np.float32)])
    meter = LoudnessMeter(SR)
    meter.add(np.stack([x, x]))
    quiet = LoudnessMeter(SR)
    quiet.add(np.stack([tone(997, 5, amp=0.1)] * 2))
    assert abs(meter.integrated - quiet.integrated) < 0.2


def test_true_peak_limiter_holds_the_ceiling_and_streams():
    from models.mastering import TruePeakLimiter
    rng = np.random.default_rng(0)
    # loud speech-like bursts: peaks far above −1 dBTP
    x = (rng.standard_normal((2, 3 * SR)) * np.repeat(rng.uniform(0.05, 1.5, 30), SR // 10)).astype(np.float32)
    y = stream(TruePeakLimiter(SR), x, block=12345)
    assert y.shape == x.shape
    meter = LoudnessMeter(SR, true_peak=True)
    meter.add(y)
    assert 20 * np.log10(meter.true_peak) <= -1.0
    quiet = x * 0.01  # far below the ceiling: untouched (only delayed and compensated)
    np.testing.assert_allclose(stream(TruePeakLimiter(SR), quiet, 4096), quiet, atol=1e-6)
    np.testing.assert_allclose(stream(TruePeakLimiter(SR), x, 4096), y, atol=1e-6)
