"""Corpus synthesis, the training loop and the evaluation metrics."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from models.training import corpus, metrics
from models.training.synth.fluid import ToolMissing
from models.training.train import TrainConfig, Trainer

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)


def tools_or_skip():
    try:
        corpus.check_tools()
    except ToolMissing as e:
        pytest.skip(f"synthesis tools missing ({e}); .ci/run installs them")


def test_corpus_is_resumable_and_parallel_renders_match(tmp_path):
    tools_or_skip()
    folder = corpus.synthesize(tmp_path, "music", "test", 2, 2.0, progress=False)
    first = (folder / "00001" / "vocals.flac").stat().st_mtime_ns
    corpus.synthesize(tmp_path, "music", "test", 3, 2.0, progress=False, jobs=2)
    assert (folder / "00001" / "vocals.flac").stat().st_mtime_ns == first  # not rendered again
    assert len(corpus.clips(folder)) == 3
    assert json.loads((folder / "00002" / "meta.json").read_text())["seed"] == corpus.SEEDS["music"]["test"] + 2
    # a clip rendered by a worker process equals the same clip rendered in this process
    alone = corpus.synthesize(tmp_path / "serial", "music", "test", 3, 2.0, progress=False)
    for stem in corpus.STEMS["music"]:
        np.testing.assert_array_equal(sf.read(folder / "00002" / f"{stem}.flac")[0],
                                      sf.read(alone / "00002" / f"{stem}.flac")[0])


def toy_corpus(root, clips=30, seconds=2.0):
    """Stems with distinct, learnable spectra, written in the corpus layout."""
    rng = np.random.default_rng(0)
    n = int(seconds * 44100)
    t = np.arange(n) / 44100
    folder = root / "music" / "train"
    for i in range(clips):
        f = rng.uniform(200, 400)
        stems = {
            "vocals": sum(np.sin(2 * np.pi * f * k * t) / k for k in range(1, 6)) * 0.1,
            "drums": rng.standard_normal(n) * np.exp(-(t % 0.5) * 20) * 0.2,
            "bass": np.sin(2 * np.pi * rng.uniform(40, 80) * t) * 0.2,
            "instruments": np.sin(2 * np.pi * rng.uniform(500, 900) * t) * 0.1,
            "fx": rng.standard_normal(n) * 0.01,
        }
        clip = folder / f"{i:05d}"
        clip.mkdir(parents=True)
        for name, x in stems.items():
            sf.write(clip / f"{name}.flac", np.stack([x, x]).T, 44100, subtype="PCM_16")
        (clip / "meta.json").write_text("{}")
    return root


def test_training_reduces_the_loss_and_resumes(tmp_path):
    torch.set_num_threads(1)
    data = toy_corpus(tmp_path / "corpus")
    cfg = TrainConfig(variant="2stem", data=str(data), out=str(tmp_path / "run"), steps=50, batch=4,
                      seconds=0.5, lr=3e-3, warmup=5, log_every=5, save_every=25, val_every=50, overrides=TINY)
    trainer = Trainer(cfg)
    losses = [trainer.train_step() for _ in range(50)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0, losses
    trainer._save()
    resumed = Trainer(cfg)
    assert resumed.step == 50
    sha = resumed.export(tmp_path / "tiny.pt")
    from models.engine import SeparationEngine
    engine = SeparationEngine("2stem", tmp_path / "tiny.pt", config_overrides=TINY)
    assert engine.weights_sha256 == sha


def test_metrics_on_constructed_cases():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((2, 44100))
    n = rng.standard_normal((2, 44100)) * 0.5
    # mixture as estimate: SDR = 10·log10(|s|² / |n|²)
    expected = 10 * np.log10(np.sum(s ** 2) / np.sum(n ** 2))
    assert abs(metrics.usdr(s, s + n) - expected) < 1e-9
    assert metrics.usdr(s, s) > 100
    noisy = s + n
    assert abs(metrics.si_sdr(s, 3 * noisy) - metrics.si_sdr(s, noisy)) < 1e-6  # scale-invariant
    assert metrics.si_sdr(s, s) > 100
    refs = np.stack([s, n])
    bss = metrics.bss_sdr(refs, refs + 1e-4 * rng.standard_normal(refs.shape))
    assert np.all(bss > 50)


def test_oracle_mask_of_disjoint_sources_is_near_perfect():
    t = np.arange(44100) / 44100
    low = np.stack([np.sin(2 * np.pi * 100 * t)] * 2)
    high = np.stack([np.sin(2 * np.pi * 5000 * t)] * 2)
    est = metrics.oracle_irm(np.stack([low, high]), 4096, 1024, power=1)
    assert metrics.usdr(low, est[0]) > 30 and metrics.usdr(high, est[1]) > 30


def test_musdb_style_folder_maps_to_our_stems(tmp_path):
    from models.training.dataset import Remixer, StemStore
    rng = np.random.default_rng(1)
    for track in ("a", "b"):
        folder = tmp_path / "musdb" / track
        folder.mkdir(parents=True)
        for i, stem in enumerate(("vocals", "drums", "bass", "other")):
            sf.write(folder / f"{stem}.wav", (rng.standard_normal((44100 * 2, 2)) * 0.04 * (i + 1)).astype(np.float32),
                     44100, subtype="FLOAT")
    store = StemStore.open(tmp_path / "musdb", corpus.STEMS["music"], musdb=True)
    assert len(store) == 2 and store.stems == corpus.STEMS["music"]
    stems = store.clip_stems(0)
    assert np.abs(stems[4]).max() == 0  # fx: silent, MUSDB has none
    ref = sf.read(tmp_path / "musdb" / "a" / "other.wav", dtype="float32")[0].T
    np.testing.assert_allclose(stems[3], ref, atol=1 / 32767)  # other → instruments
    mix, targets = Remixer(store, ("vocals", "instrumental"), 1.0, seed=0).example()
    np.testing.assert_allclose(mix, targets.sum(0), atol=1e-6)


def test_speech_remix_draws_the_snr_users_send(tmp_path):
    """Remixing speech of one clip with noise of another must not inherit both clips' levels:
    the training SNR stays within −5…20 dB (or near-clean 30–45 dB), and mixture = sum."""
    from models.training.dataset import Remixer, StemStore, augment_for
    rng = np.random.default_rng(2)
    root = tmp_path / "speech"
    for i in range(6):  # speech from −50 to −10 dBFS over noise at −26 dBFS: raw SNRs −24…+16 dB
        clip = root / f"{i:05d}"
        clip.mkdir(parents=True)
        (clip / "meta.json").write_text("{}")
        level = 10 ** ((-50 + 8 * i) / 20)
        for stem, gain in (("speech", level), ("noise", 0.05)):
            x = np.tile((rng.standard_normal(44100 * 2) * gain).astype(np.float32), (2, 1)).T
            sf.write(clip / f"{stem}.flac", np.clip(x, -1, 1), 44100)
    store = StemStore.open(root, ("speech", "noise"))
    remix = Remixer(store, ("speech", "noise"), 1.0, augment_for("speech"), seed=0)
    snrs = []
    for _ in range(300):
        mix, targets = remix.example()
        np.testing.assert_allclose(mix, targets.sum(0), atol=1e-6)
        s, n = np.square(targets[0]).sum(), np.square(targets[1]).sum()
        if s > 1e-9 and n > 1e-12:
            snrs.append(10 * np.log10(s / n))
    snrs = np.array(snrs)
    assert len(snrs) > 200
    inside = ((snrs > -5.5) & (snrs < 20.5)) | ((snrs > 29.5) & (snrs < 45.5))
    assert inside.all(), snrs[~inside]
    assert 0.02 < np.mean(snrs > 29.5) < 0.2  # some near-clean examples, not many


def test_gap_envelope_silences_one_stretch_with_fades():
    from models.training.dataset import gap_envelope
    rng = np.random.default_rng(3)
    for _ in range(50):
        env = gap_envelope(rng, 44100 * 4, (0.5, 3.0))
        silent = np.flatnonzero(env == 0)
        assert 0.5 * 44100 - 1 <= silent.size <= 3.0 * 44100
        assert np.all(np.diff(silent) == 1)  # one stretch
        assert env.min() == 0 and env.max() == 1
        assert np.max(np.abs(np.diff(env))) < 0.01  # faded in and out, no click
    assert np.all(gap_envelope(rng, 1000, (1.0, 2.0)) == 0)  # longer than the example: all silent


def test_music_remix_has_sparse_passages_and_still_sums(tmp_path):
    """A music model must see songs without a voice (and a voice alone): with the sparse
    options, a good share of examples have a silent vocals stem or a silent stretch in it,
    some hold a single stem, and the mixture stays exactly the targets' sum."""
    from dataclasses import replace

    from models.training.dataset import Remixer, StemStore, augment_for
    rng = np.random.default_rng(4)
    root = tmp_path / "music"
    for i in range(4):
        clip = root / f"{i:05d}"
        clip.mkdir(parents=True)
        (clip / "meta.json").write_text("{}")
        for stem in corpus.STEMS["music"]:
            x = (rng.standard_normal((44100 * 3, 2)) * 0.05).astype(np.float32)
            sf.write(clip / f"{stem}.flac", x, 44100)
    store = StemStore.open(root, corpus.STEMS["music"])
    remix = Remixer(store, corpus.STEMS["music"], 2.0, replace(augment_for("music"), sparse=0.25, gaps=0.2), seed=0)
    no_voice = voice_gap = single = 0
    for _ in range(400):
        mix, targets = remix.example()
        np.testing.assert_allclose(mix, targets.sum(0), atol=1e-6)
        frames = np.square(targets).sum(axis=1).reshape(len(targets), -1, 441).sum(-1)  # (S, 10 ms frames)
        active = frames.sum(1) > 0
        no_voice += not active[0]
        voice_gap += active[0] and (frames[0] == 0).sum() >= 50  # ≥ 0.5 s of silence inside
        single += active.sum() == 1
    assert 0.15 < no_voice / 400 < 0.35, no_voice
    assert 0.08 < voice_gap / 400 < 0.3, voice_gap
    assert 0.01 < single / 400 < 0.1, single


def test_silent_weight_one_makes_a_leak_cost_as_much_as_an_error():
    """Masks need not sum to one, so only the silent-stem term stops a model from copying part
    of a solo instrument into vocals; `--silent-weight 1` weighs it like an active stem's error."""
    from models.training.losses import separation_loss
    rng = torch.Generator().manual_seed(0)
    inst = torch.randn(1, 1, 2, 44100, generator=rng)
    ref = torch.cat([torch.zeros_like(inst), inst], dim=1)  # vocals silent, instruments active
    mix = inst[:, 0]
    clean = torch.cat([torch.zeros_like(inst), inst], dim=1)
    leaky = torch.cat([0.5 * inst, inst], dim=1)  # −6 dB of the input copied into vocals
    w = 1.0
    cost = float(separation_loss(leaky, ref, mix, silent_weight=w) - separation_loss(clean, ref, mix, silent_weight=w))
    assert cost * 2 > 20  # per silent stem: from −30 dB (the cap) to −6 dB, about 24 dB
    weak = float(separation_loss(leaky, ref, mix) - separation_loss(clean, ref, mix))
    assert weak < cost / 5  # the default weighting barely noticed it


def test_eval_writes_a_card_whose_note_comes_from_a_file(tmp_path):
    """`locoserve eval --card --card-note-file`: the card carries the note verbatim (quotes and
    paragraphs a shell argument would mangle) and names the file, so the command regenerates it."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import models

    data = toy_corpus(tmp_path / "corpus", clips=1, seconds=3.0)
    (data / "music" / "train").rename(data / "music" / "test")
    ckpt = tmp_path / "2stem-cpu.pt"
    shutil.copy(Path(models.__file__).parent / "checkpoints" / "2stem-cpu.pt", ckpt)
    note = tmp_path / "note.md"
    note.write_text("It's a run's note: \"quoted\".\n\nSecond paragraph.\n")
    run = subprocess.run([sys.executable, "-m", "serve_app.cli", "eval", "--variant", "2stem", "--checkpoint",
                          ckpt, "--data", data, "--threads", "1", "--card",
                          "--card-note-file", note], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    card = (tmp_path / "2stem-cpu.md").read_text()
    assert card.rstrip().endswith("It's a run's note: \"quoted\".\n\nSecond paragraph.")
    assert f"--card-note-file {note}" in card
    assert json.loads((tmp_path / "2stem-cpu.eval.json").read_text())["test"]["clips"] == 1
    both = subprocess.run([sys.executable, "-m", "serve_app.cli", "eval", "--variant", "2stem", "--checkpoint", ckpt,
                           "--data", data, "--card", "--card-note", "x", "--card-note-file", note],
                          capture_output=True, text=True, timeout=600)
    assert both.returncode != 0 and "not both" in both.stderr
