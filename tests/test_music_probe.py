"""The music probe (benchmarks/music_real_probe.py): its clips are what it says they are,
the same on every run, and its figures read a separation the right way round."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import music_real_probe as probe  # noqa: E402
from models.training.synth import library  # noqa: E402


def needs_samples():
    for pkg in ("ktuberling-data", "sonic-pi-samples", "lmms-common"):
        if not library.available(pkg):
            pytest.skip(f"{pkg} is not installed; .ci/run installs it")


def _db(x):
    return 10 * np.log10(np.sum(np.square(x)))


def test_voice_over_real_clips_are_at_the_stated_ratio_and_level():
    needs_samples()
    for i in range(3):
        voice, rest = probe.clip("voice-over-real", i)
        assert _db(voice) - _db(rest) == pytest.approx(probe.VOICE_RATIOS[i], abs=0.01)
        assert 20 * np.log10(library.rms(voice + rest)) == pytest.approx(probe.LEVEL_DB, abs=0.01)
        assert voice.shape == rest.shape == (2, int(probe.SECONDS * library.SR))


def test_clips_are_repeatable_and_differ_between_sets():
    needs_samples()
    a1, _ = probe.clip("a-cappella", 1)
    a2, _ = probe.clip("a-cappella", 1)
    np.testing.assert_array_equal(a1, a2)
    _, r1 = probe.clip("no-voice", 1)
    _, r2 = probe.clip("no-voice", 1)
    np.testing.assert_array_equal(r1, r2)
    assert not np.allclose(r1, probe.clip("no-voice", 2)[1])
    assert np.all(probe.clip("no-voice", 0)[0] == 0) and np.all(probe.clip("a-cappella", 0)[1] == 0)


def test_score_reads_a_perfect_and_a_useless_separation():
    rng = np.random.default_rng(0)
    voice, rest = rng.standard_normal((2, 2, 44100)) * 0.1
    perfect = probe.score(voice, rest, voice, rest)
    assert perfect["vocals_improvement"] > 100 and perfect["rest_improvement"] > 100
    half = probe.score(voice, rest, (voice + rest) / 2, (voice + rest) / 2)
    assert half["vocals_db"] == pytest.approx(-6.02, abs=0.2)  # an even split puts half the amplitude in vocals
    silent = np.zeros_like(rest)
    leak = probe.score(silent, rest, rest * 0.1, rest * 0.9)
    assert leak["vocals_db"] == pytest.approx(-20.0, abs=0.01) and "vocals_improvement" not in leak
