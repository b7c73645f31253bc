"""Peer references for the speed benchmark, measured on the same input in the same run.

HTDemucs (the released `htdemucs` shape: 48 channels, depth 4, 512 bottom channels, 5
cross-transformer layers, 7.8 s segments) through Demucs's own `apply_model` (overlap 0.25,
input normalized as demucs.api does), and Open-Unmix `umxhq` (4 × 3-layer BiLSTM, hidden
512, whole track, one Wiener iteration). Random weights: speed only. Both are optional;
without them installed this prints how to get them.
"""

from __future__ import annotations

import statistics
import sys
import time
import types
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
import torch


def _stub_torchaudio() -> None:
    # openunmix imports torchaudio for file I/O we do not use; no torchaudio exists for torch 2.13
    if "torchaudio" not in sys.modules:
        stub = types.ModuleType("torchaudio")
        stub.__getattr__ = lambda name: (_ for _ in ()).throw(ImportError(f"torchaudio.{name}"))
        sys.modules["torchaudio"] = stub


def _time(fn, runs: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def htdemucs(mix: torch.Tensor):
    from demucs.apply import apply_model
    from demucs.htdemucs import HTDemucs

    model = HTDemucs(["drums", "bass", "other", "vocals"], bottom_channels=512, dconv_mode=3,
                     segment=Fraction(39, 5)).eval()

    def run():
        ref = mix.mean(0)
        x = (mix - ref.mean()) / ref.std()
        with torch.inference_mode():
            apply_model(model, x[None], shifts=0, split=True, overlap=0.25, progress=False)
    return model, run


def umxhq(mix: torch.Tensor):
    _stub_torchaudio()
    from openunmix.model import OpenUnmix, Separator

    targets = {t: OpenUnmix(nb_bins=2049, nb_channels=2, hidden_size=512, nb_layers=3, max_bin=1487).eval()
               for t in ("vocals", "drums", "bass", "other")}
    model = Separator(targets, niter=1, sample_rate=44100.0, n_fft=4096, n_hop=1024, nb_channels=2).eval()

    def run():
        with torch.inference_mode():
            model(mix[None])
    return model, run


def run_peers(path: Path, runs: int, threads: int) -> None:
    torch.set_num_threads(threads)
    x, sr = sf.read(path, dtype="float32")
    mix = torch.from_numpy(x.T.copy())
    minutes = x.shape[0] / sr / 60
    print("\n## Peers on the same 60 s (random weights), seconds per minute of audio")
    for name, build in (("HTDemucs (demucs 4.1.0 apply_model)", htdemucs), ("Open-Unmix umxhq", umxhq)):
        try:
            model, run = build(mix)
        except ImportError as e:
            print(f"{name}: not installed ({e}); pip install --no-deps -r benchmarks/peers.txt")
            continue
        params = sum(p.numel() for p in model.parameters()) / 1e6
        per_min = [t / minutes for t in _time(run, runs)]
        print(f"{name}: median {statistics.median(per_min):.2f} s/min  runs {[round(v, 2) for v in per_min]}  "
              f"({params:.1f} M params)")
