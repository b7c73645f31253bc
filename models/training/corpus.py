"""The synthetic corpus on disk: render clips once (resumable, in parallel), read them back.

Layout: <root>/<kind>/<split>/<index:05d>/{<stem>.flac, meta.json}, 16-bit FLAC stems (the
mixture is their sum and is not stored). A clip folder counts only once its meta.json
exists, so an interrupted run resumes where it stopped; `jobs` worker processes render
clips side by side, and the result does not depend on their number (each clip is a pure
function of its seed).

Splits: `train`; `test` (held-out seeds and only held-out recordings, speakers and voices:
see `synth/library.py`, `synth/words.py`, `synth/tts.py`); `test-real` (held-out real
recordings only: recorded words over recorded noise for speech, recorded drums and real
voices for music). Seeds: clip i of a split is rendered from SEEDS[kind][split] + i; test
seeds start far above any training seed.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ..progress import ProgressBar

SEEDS = {"music": {"train": 1_000_000, "test": 9_000_000, "test-real": 9_600_000},
         "speech": {"train": 2_000_000, "test": 9_500_000, "test-real": 9_800_000}}
STEMS = {"music": ("vocals", "drums", "bass", "instruments", "fx"), "speech": ("speech", "noise")}
SPLITS = ("train", "test", "test-real")


def check_tools(kind: str = "music") -> None:
    """Fail early, naming the Debian or pip package to install."""
    from .synth import fluid, library, tts, voice

    fluid._lib()
    fluid.check_soundfont()
    voice.check_espeak()
    voice._world()
    tts.check()
    packages = ["ktuberling-data", "sonic-pi-samples", "lmms-common"]
    if kind == "music":
        packages.append("hydrogen-drumkits")
    for package in packages:
        library.root(package)


def render(kind: str, seed: int, seconds: float, split: str = "train", index: int = 0,
           snr_db: float | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """One clip's stems and a description of what went into it."""
    real = split == "test-real"
    side = "train" if split == "train" else "test"
    if kind == "music":
        from .synth.music import render_clip
        return render_clip(seed, seconds, split=side, real=real)
    from .synth.speech import SNR_BANDS, render_clip
    if snr_db is None and side == "test":
        snr_db = SNR_BANDS[index % len(SNR_BANDS)]
    return render_clip(seed, seconds, snr_db, split=side, real=real)


def _render_one(job: tuple) -> int:
    folder, kind, split, i, seconds, snr_db = job
    clip = Path(folder) / f"{i:05d}"
    if (clip / "meta.json").exists():
        return i
    seed = SEEDS[kind][split] + i
    stems, info = render(kind, seed, seconds, split, i, snr_db)
    clip.mkdir(parents=True, exist_ok=True)
    for name, audio in stems.items():
        sf.write(clip / f"{name}.flac", audio.T, 44100, subtype="PCM_16")
    meta = {"kind": kind, "split": split, "index": i, "seed": seed, "seconds": seconds,
            "stems": list(stems), **info}
    (clip / "meta.tmp").write_text(json.dumps(meta))
    (clip / "meta.tmp").replace(clip / "meta.json")
    return i


def _worker_init() -> None:
    # one BLAS/OpenMP thread per worker: the parallelism is across clips
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        import torch
        torch.set_num_threads(1)
    except ImportError:
        pass


def synthesize(root: Path, kind: str, split: str, count: int, seconds: float,
               snr_db: float | None = None, progress: bool = True, jobs: int = 1) -> Path:
    check_tools(kind)
    if kind == "music":  # WORLD analyses of recorded words, shared by clips and workers
        from .synth import singer
        singer.CACHE_DIR = Path(root) / "world-cache"
    folder = Path(root) / kind / split
    folder.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(f"{kind}/{split}", " clips") if progress else None
    started = time.monotonic()
    todo = [(str(folder), kind, split, i, seconds, snr_db) for i in range(count)]
    done = 0
    if jobs > 1:
        ctx = multiprocessing.get_context("fork")
        with ctx.Pool(jobs, initializer=_worker_init) as pool:
            for _ in pool.imap_unordered(_render_one, todo, chunksize=1):
                done += 1
                if bar:
                    bar(done, count)
    else:
        for job in todo:
            _render_one(job)
            done += 1
            if bar:
                bar(done, count)
    (folder / "corpus.json").write_text(json.dumps({
        "kind": kind, "split": split, "clips": count, "seconds": seconds, "snr_db": snr_db,
        "seed_base": SEEDS[kind][split], "last_run_s": round(time.monotonic() - started, 1)}))
    return folder


def clips(folder: Path) -> list[Path]:
    return sorted(p.parent for p in Path(folder).glob("*/meta.json"))


def load_clip(clip: Path, stems: tuple[str, ...]) -> np.ndarray:
    """(S, 2, n) float32 stems of one clip."""
    return np.stack([sf.read(clip / f"{s}.flac", dtype="float32", always_2d=True)[0].T for s in stems])
