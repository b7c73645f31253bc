"""The passes benchmark (benchmarks/speech_shifts.py) must measure what the service serves:
its "two" is the engine at `shifts=2` to the bit, and each distinct pass runs once per chunk."""

import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import speech_shifts  # noqa: E402
from models.engine import SeparationEngine  # noqa: E402
from test_speech_benchmark import speechlike  # noqa: E402


@pytest.fixture(scope="module")
def noisy() -> np.ndarray:
    s = speechlike(3 * 44100, seed=5)
    return (s + np.random.default_rng(5).normal(0, 0.05, s.size)).astype(np.float32)


def _speech(engine, mix, out: Path) -> np.ndarray:
    result = engine.separate(np.stack([mix, mix]), out)
    return sf.read(result.stems["speech"], dtype="float32", always_2d=True)[0]


def test_two_passes_are_the_served_estimate_to_the_bit(noisy, tmp_path):
    bench = speech_shifts.PassEngine("speech", threads=1)
    bench.passes = speech_shifts.COMBOS["two"]
    served = SeparationEngine("speech", threads=1)
    assert served.shifts == 2  # the default this benchmark claims to reproduce
    np.testing.assert_array_equal(_speech(bench, noisy, tmp_path / "b"), _speech(served, noisy, tmp_path / "s"))
    bench.passes = speech_shifts.COMBOS["one"]
    single = SeparationEngine("speech", threads=1, shifts=1)
    np.testing.assert_array_equal(_speech(bench, noisy, tmp_path / "b1"), _speech(single, noisy, tmp_path / "s1"))


def test_each_distinct_pass_runs_once_per_chunk(noisy, tmp_path):
    bench = speech_shifts.PassEngine("speech", threads=1)
    calls = []
    once = bench._forward_once
    bench._forward_once = lambda batch: calls.append(batch.shape) or once(batch)
    for name in speech_shifts.COMBOS:
        bench.passes = speech_shifts.COMBOS[name]
        _speech(bench, noisy, tmp_path / name)
    distinct = {p for passes in speech_shifts.COMBOS.values() for p in passes}
    assert len(calls) == len(distinct) == 5  # one clip of 3 s is one chunk
    # the inverted pass is turned back: an estimate of the same voice, but its own one
    bench.passes = speech_shifts.COMBOS["inverted"]
    inverted = _speech(bench, noisy, tmp_path / "inv-again").ravel()
    bench.passes = speech_shifts.COMBOS["one"]
    one = _speech(bench, noisy, tmp_path / "one-again").ravel()
    assert np.corrcoef(inverted, one)[0, 1] > 0.9 and not np.array_equal(inverted, one)


def test_kept_amplitudes_are_read_back_from_a_known_blend():
    rng = np.random.default_rng(1)
    voice, noise = speechlike(44100, seed=2), rng.normal(0, 0.1, 44100)
    a, b = speech_shifts.kept(0.75 * voice + 0.4 * noise, voice, noise)
    assert a == pytest.approx(0.75, abs=1e-9) and b == pytest.approx(0.4, abs=1e-9)


def test_the_table_counts_clips_made_worse():
    rows = [{"clip": f"{i:05d}", "snr": 0.0, "noise": ["babble"], "input": 0.0,
             "ours": {"one": 2.0, "two": 3.0 if i else -2.5}, "mix_back": {"0.1": 1.0}, "kept": (0.8, 0.5)}
            for i in range(4)]
    report = {"weights_sha256": "ab" * 32, "start": 60, "combos": ["one", "two"], "sets": {"test-real": rows}}
    lines = speech_shifts.tables(report)
    row = next(line for line in lines if line.startswith("| test-real"))
    assert row == "| test-real (4, from 60) | +2.00 (+2.00, 0) | +1.62 (+3.00, 1) |"
    assert any("00000 +0 dB babble: -2.50 dB, voice x0.80, noise x0.50" in line for line in lines)
    rows[0]["snr"], rows[0]["noise"] = None, None  # a clip rendered without a stated SNR or noise
    assert any("00000 clean : -2.50 dB" in line for line in speech_shifts.tables(report))
