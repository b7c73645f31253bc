"""The synthetic corpus on disk: render clips once (resumable), read them back for training.

Layout: <root>/<kind>/<split>/<index:05d>/{<stem>.flac, meta.json}, 16-bit FLAC stems (the
mixture is their sum and is not stored). A clip folder counts only once its meta.json
exists, so an interrupted run resumes where it stopped.

Seeds: clip i of a split is rendered from SEEDS[kind][split] + i. The test seeds start far
above any training seed, so no held-out song or talker is ever rendered for training.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ..progress import ProgressBar

SEEDS = {"music": {"train": 1_000_000, "test": 9_000_000},
         "speech": {"train": 2_000_000, "test": 9_500_000}}
STEMS = {"music": ("vocals", "drums", "bass", "instruments", "fx"), "speech": ("speech", "noise")}


def check_tools() -> None:
    """Fail early, naming the Debian or pip package to install."""
    from .synth import fluid, voice

    fluid._lib()
    fluid.check_soundfont()
    voice.check_espeak()
    voice._world()


def render(kind: str, seed: int, seconds: float, snr_db: float | None = None) -> dict[str, np.ndarray]:
    if kind == "music":
        from .synth.music import render_clip
        return render_clip(seed, seconds)
    from .synth.speech import render_clip
    return render_clip(seed, seconds, snr_db)


def synthesize(root: Path, kind: str, split: str, count: int, seconds: float,
               snr_db: float | None = None, progress: bool = True) -> Path:
    check_tools()
    folder = Path(root) / kind / split
    folder.mkdir(parents=True, exist_ok=True)
    bar = ProgressBar(f"{kind}/{split}", " clips") if progress else None
    started = time.monotonic()
    for i in range(count):
        clip = folder / f"{i:05d}"
        if not (clip / "meta.json").exists():
            seed = SEEDS[kind][split] + i
            stems = render(kind, seed, seconds, snr_db)
            clip.mkdir(parents=True, exist_ok=True)
            for name, audio in stems.items():
                sf.write(clip / f"{name}.flac", audio.T, 44100, subtype="PCM_16")
            meta = {"kind": kind, "split": split, "index": i, "seed": seed, "seconds": seconds,
                    "snr_db": snr_db, "stems": list(stems)}
            (clip / "meta.json").write_text(json.dumps(meta))
        if bar:
            bar(i + 1, count)
    (folder / "corpus.json").write_text(json.dumps({
        "kind": kind, "split": split, "clips": count, "seconds": seconds, "snr_db": snr_db,
        "seed_base": SEEDS[kind][split], "last_run_s": round(time.monotonic() - started, 1)}))
    return folder


def clips(folder: Path) -> list[Path]:
    return sorted(p.parent for p in Path(folder).glob("*/meta.json"))


def load_clip(clip: Path, stems: tuple[str, ...]) -> np.ndarray:
    """(S, 2, n) float32 stems of one clip."""
    return np.stack([sf.read(clip / f"{s}.flac", dtype="float32", always_2d=True)[0].T for s in stems])
