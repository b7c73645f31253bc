"""A stem's browser preview and waveform peaks (models/preview.py), made in one read."""

import numpy as np
import soundfile as sf

from models.preview import PEAK_BUCKETS, PeakMeter, preview

SR = 44100


def test_peaks_are_each_slices_extremes_over_both_channels(tmp_path):
    rng = np.random.default_rng(3)
    n = SR * 2 + 123  # not a multiple of the bucket count
    x = (rng.standard_normal((n, 2)) * 0.1).astype(np.float32)
    x[1000, 1] = 0.9  # a spike in the right channel only, early
    x[n - 5, 0] = -1.4  # beyond full scale in the last slice: carried, not clipped
    sf.write(tmp_path / "drums.wav", x, SR, subtype="FLOAT")
    peaks = preview(tmp_path / "drums.wav", tmp_path / "drums.mp3")
    assert (peaks["frames"], peaks["sample_rate"]) == (n, SR)
    assert len(peaks["min"]) == len(peaks["max"]) == PEAK_BUCKETS
    assert peaks["max"][1000 * PEAK_BUCKETS // n] == 0.9 and peaks["min"][-1] == -1.4
    assert all(lo <= hi for lo, hi in zip(peaks["min"], peaks["max"]))
    y, sr = sf.read(tmp_path / "drums.mp3")
    assert sr == SR and y.shape == x.shape  # gapless mp3: the stem's length to the sample
    assert (tmp_path / "drums.mp3").stat().st_size < (tmp_path / "drums.wav").stat().st_size / 8


def test_a_stem_shorter_than_the_bucket_count_has_a_peak_a_frame():
    meter = PeakMeter(10)
    meter.add(np.linspace(-1, 1, 20, dtype=np.float32).reshape(10, 2))
    assert meter.buckets == 10 and meter.pos == 10
    assert meter.to_dict()["max"][-1] == 1.0 and meter.to_dict()["min"][0] == -1.0
