"""SeparationEngine end to end on real files: lengths, identity through the whole path,
device constraints and fallbacks, normalization, metadata, and the CLI."""

import json
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_fixtures import SR, music_like, write
from models import audio
from models.device import DeviceChoice, DeviceNotAllowed, choose_device
from models.engine import EngineError, SeparationEngine

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)


def engine(variant="2stem", **kw):
    kw.setdefault("random_weights", True)
    return SeparationEngine(variant, chunk_seconds=2.0, overlap_seconds=0.25, config_overrides=TINY, **kw)


def read(path):
    x, sr = sf.read(path, dtype="float32", always_2d=True)
    assert sr == SR
    return x.T


@pytest.mark.parametrize("seconds", [0.3, 2.0, 5.25, 7.0])  # < chunk, = chunk, hop multiple, 4 chunks
def test_untouched_stem_is_exactly_the_input_share(tmp_path, seconds):
    x = music_like(seconds)
    src = write(tmp_path / "in.wav", x)
    result = engine().separate(src, tmp_path / "out")
    inst = read(result.stems["instrumental"])
    assert inst.shape == (2, x.shape[0])  # the input's length, to the sample
    # untrained decoders give mask ½ to each stem: through decode, chunks, crossfades and
    # writing, the unconditioned stem must be exactly half the input
    np.testing.assert_allclose(inst, x.T / 2, atol=2e-6)


def test_five_stems_and_conditioning(tmp_path):
    x = music_like(3.0)
    result = engine("5stem").separate(write(tmp_path / "in.wav", x), tmp_path / "out")
    assert list(result.stems) == ["vocals", "drums", "bass", "instruments", "fx"]
    np.testing.assert_allclose(read(result.stems["drums"]), x.T / 5, atol=2e-6)  # drums untouched
    bass = read(result.stems["bass"])
    np.testing.assert_allclose(bass.sum(0), x.T.sum(0) / 5, atol=1e-5)  # crossover keeps L+R
    assert not np.allclose(bass, x.T / 5, atol=1e-3)  # but the low end was made mono


def test_48k_mono_mp3_input(tmp_path):
    x = music_like(2.5, 48000)[:, :1]
    sf.write(tmp_path / "in.mp3", x, 48000, format="MP3")
    result = engine().separate(tmp_path / "in.mp3", tmp_path / "out", fmt="flac")
    vocals = read(result.stems["vocals"])
    assert abs(vocals.shape[1] - 2.5 * SR) < 0.1 * SR
    assert result.stems["vocals"].suffix == ".flac"
    assert result.metadata["input"]["sample_rate"] == 48000


def test_array_input_and_progress(tmp_path):
    seen = []
    x = music_like(5.0).T.copy()
    result = engine().separate(x, tmp_path, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (3, 3) and [d for d, _ in seen] == [1, 2, 3]
    meta = result.metadata
    assert meta["chunk_samples"] == 2 * SR and meta["overlap_samples"] == round(0.25 * SR)
    assert meta["random_weights"] is True and meta["weights_sha256"] == "random"
    assert meta["device"] == "cpu" and meta["execution_mode"] == "cpu_only"
    assert meta["timings"]["total_s"] > 0


def test_peak_normalization_after_inference(tmp_path):
    x = music_like(3.0) * 0.1
    result = engine().separate(write(tmp_path / "in.wav", x), tmp_path / "out", normalize="peak")
    for path in result.stems.values():
        assert abs(20 * np.log10(np.abs(read(path)).max()) - (-1.0)) < 0.01
    assert all(s["gain_db"] > 10 for s in result.metadata["output"]["stems"])
    assert not list((tmp_path / "out").glob(".*"))  # temporary passes cleaned up


def test_flac_counts_clipped_samples(tmp_path):
    x = music_like(2.0) * 8  # way over full scale: halves still clip in 24-bit PCM
    result = engine().separate(write(tmp_path / "in.wav", x), tmp_path / "out", fmt="flac")
    assert result.metadata["output"]["stems"][1]["clipped_samples"] > 0


def test_bad_input_raises_audio_error(tmp_path):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk" * 10)
    with pytest.raises(audio.AudioError):
        engine().separate(tmp_path / "bad.wav", tmp_path / "out")


def test_cpu_only_refuses_cuda():
    with pytest.raises(DeviceNotAllowed):
        choose_device("cpu_only", "cuda")
    with pytest.raises(DeviceNotAllowed):
        engine(device="cuda", mode="cpu_only")


def test_cpu_only_never_touches_cuda(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("cpu_only must not probe CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", boom)
    assert engine(mode="cpu_only", device="auto").choice.device.type == "cpu"


def test_gpu_allowed_falls_back_when_cuda_fails_to_initialize(tmp_path, monkeypatch):
    real_zeros = torch.zeros

    def zeros(*a, device=None, **k):
        if device is not None and str(device).startswith("cuda"):
            raise RuntimeError("CUDA error: initialization error")
        return real_zeros(*a, device=device, **k)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch, "zeros", zeros)
    eng = engine(mode="gpu_allowed", device="auto")
    monkeypatch.undo()
    result = eng.separate(music_like(1.0).T.copy(), tmp_path)
    assert result.device == "cpu" and result.fallback
    assert "CUDA failed to initialize" in result.fallback_reason
    assert result.metadata["fallback"] is True


def test_device_fault_during_a_job_retries_once_on_cpu(tmp_path, monkeypatch):
    # batch_size given: sizing a batch from free memory would ask the (absent) CUDA runtime
    eng = engine(mode="gpu_allowed", device="cpu", batch_size=1)
    eng.choice = DeviceChoice(torch.device("cuda"))  # pretend the job started on a GPU
    forward = eng._forward
    calls = {"n": 0}

    def flaky(chunk):
        calls["n"] += 1
        if eng._device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return forward(chunk)

    monkeypatch.setattr(eng, "_forward", flaky)
    x = music_like(3.0).T.copy()
    result = eng.separate(x, tmp_path)
    assert result.device == "cpu" and result.fallback and "OutOfMemoryError" in result.fallback_reason
    np.testing.assert_allclose(read(result.stems["instrumental"]), x / 2, atol=2e-6)
    # the next job tries the GPU again; with no CUDA in this build that fails and is recorded
    assert eng.choice.device.type == "cpu" and eng.choice.fallback and "cuda failed" in eng.choice.reason


def test_a_bug_is_not_retried(tmp_path, monkeypatch):
    eng = engine()
    monkeypatch.setattr(eng, "_forward", lambda chunk: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        eng.separate(music_like(1.0).T.copy(), tmp_path)
    assert not list(tmp_path.glob("*.wav"))  # partial outputs removed


def test_missing_checkpoint_refuses_to_start(tmp_path, monkeypatch):
    monkeypatch.setattr("models.checkpoint.CHECKPOINT_DIR", tmp_path)  # as if none were shipped
    with pytest.raises(EngineError, match="random-weights"):
        SeparationEngine("2stem", checkpoint=None, config_overrides=TINY)


def test_cli_separate_json(tmp_path):
    src = write(tmp_path / "song.wav", music_like(1.5))
    out = subprocess.run([sys.executable, "-m", "serve_app.cli", "separate", str(src), "--out",
                          str(tmp_path / "stems"), "--random-weights", "--device", "cpu", "--json",
                          "--threads", "1", "--shifts", "2"], capture_output=True, text=True, check=True)
    meta = json.loads(out.stdout)
    assert meta["device"] == "cpu" and meta["random_weights"] is True and meta["shifts"] == 2
    assert "RANDOM WEIGHTS" in out.stderr
    for stem in ("vocals", "instrumental"):
        assert read(tmp_path / "stems" / "song" / f"{stem}.wav").shape == (2, round(1.5 * SR))
