"""Stem encodings on real files: mp3 and opus decode back (through libsndfile) to the input's
duration, in time with it, at the asked bitrate; wrong formats and bitrates are refused."""

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from audio_fixtures import SR, music_like, tone
from models.stems import EncodingError, StemSink, StemWriter, check_encoding, transcode


def signal(seconds: float) -> np.ndarray:
    """(2, n): a 440 Hz tone left, 660 Hz right, plus a little noise (peaks about 0.32)."""
    n = round(seconds * SR)
    x = np.stack([tone(440, seconds)[:n], tone(660, seconds)[:n]]) * 0.6
    return (x + 0.05 * music_like(seconds).T[:, :n]).astype(np.float32)


def write_blocks(writer: StemWriter, x: np.ndarray, block: int = 30000) -> None:
    for start in range(0, x.shape[1], block):
        writer.write(x[:, start:start + block])
    writer.close()


def snr_db(ref: np.ndarray, y: np.ndarray) -> float:
    return 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - y) ** 2))


@pytest.mark.parametrize("fmt,bitrate", [("mp3", None), ("mp3", 128), ("opus", None), ("opus", 64)])
def test_lossy_stems_decode_to_the_input_length_in_time(tmp_path, fmt, bitrate):
    x = signal(3.37)  # not a whole number of codec frames
    path = tmp_path / f"vocals.{fmt}"
    write_blocks(StemWriter(path, fmt, SR, bitrate), x)
    y, rate = sf.read(path, dtype="float32", always_2d=True)
    if fmt == "opus":
        assert rate == 48000 and y.shape[0] == round(x.shape[1] * 48000 / SR)
        y = resample_poly(y, 147, 160, axis=0).astype(np.float32)
    else:
        assert rate == SR
    assert y.shape == (x.shape[1], 2)  # to the sample: gapless, no encoder delay left in
    # faithful and in time: aligned, the SNR is 25-48 dB; one sample early or late it is about 21
    snr = {lag: snr_db(x.T[2000:-2000], np.roll(y, lag, axis=0)[2000:-2000]) for lag in (-1, 0, 1)}
    assert snr[0] > 23 and snr[0] > max(snr[-1], snr[1]) + 3
    kbps = path.stat().st_size * 8 / (x.shape[1] / SR) / 1000
    expected = check_encoding(fmt, bitrate)
    assert 0.8 * expected < kbps < 1.15 * expected + 8  # headers weigh on a 3 s file


def test_levels_over_full_scale_survive_lossy_encoding(tmp_path):
    x = signal(1.0) * 6  # peaks near 1.9: a stem may exceed full scale before normalization
    sink = StemSink("drums", tmp_path / "drums.mp3", "mp3", SR)
    sink.write(x)
    report = sink.close()
    y, _ = sf.read(tmp_path / "drums.mp3", dtype="float32")
    assert np.abs(y).max() > 1.5 and report.clipped_samples == 0


def test_normalized_opus_stem(tmp_path):
    x = signal(2.0) * 0.05
    sink = StemSink("vocals", tmp_path / "vocals.opus", "opus", SR, normalize="peak", bitrate=96)
    sink.write(x)
    report = sink.close()
    y, rate = sf.read(tmp_path / "vocals.opus", dtype="float32")
    assert rate == 48000 and report.frames == x.shape[1]
    assert abs(20 * np.log10(np.abs(y).max()) - (-1.0)) < 0.5  # a lossy codec moves peaks a little
    assert not list(tmp_path.glob(".*"))


def test_transcode_a_preview(tmp_path):
    x = signal(2.5)
    sf.write(tmp_path / "bass.wav", x.T, SR, subtype="FLOAT")
    frames = transcode(tmp_path / "bass.wav", tmp_path / "bass.preview.opus", "opus", 48)
    assert frames == x.shape[1]
    info = sf.info(tmp_path / "bass.preview.opus")
    assert info.frames == round(x.shape[1] * 48000 / SR)
    assert (tmp_path / "bass.preview.opus").stat().st_size < (tmp_path / "bass.wav").stat().st_size / 30


@pytest.mark.parametrize("fmt,bitrate,message", [
    ("aac", None, "unknown format"), ("wav", 320, "lossless"), ("flac", 128, "lossless"),
    ("mp3", 100, "not an MPEG-1 Layer III rate"), ("opus", 8, "outside"), ("opus", 600, "outside")])
def test_bad_formats_and_bitrates_are_refused(tmp_path, fmt, bitrate, message):
    with pytest.raises(EncodingError, match=message):
        StemWriter(tmp_path / "x", fmt, SR, bitrate)
    assert not (tmp_path / "x").exists()


def test_aborted_opus_stem_leaves_nothing(tmp_path):
    sink = StemSink("fx", tmp_path / "fx.opus", "opus", SR)
    sink.write(signal(0.5))
    sink.abort()
    assert not list(tmp_path.iterdir())
