"""Training examples remixed on the fly from cached stems.

Stems are packed once into one int16 file per split (`pack.int16`, shape (stems, 2, total))
with a clip table, and memory-mapped: random crops then cost a page-cache read, and no
corpus needs to fit in RAM. Each example draws every stem from its own random clip and
offset (Demucs-style remixing; 25 % of examples keep all stems of one clip together so the
model also sees coherent songs), with a random gain, polarity and channel swap per stem,
stem dropout, optionally sparse examples and silent stretches (songs are not all five parts
all the time), and a random low-pass shared by all stems (so that "no energy above 11 kHz"
cannot become a shortcut to the espeak-ng vocals).

Sources: our synthetic corpus (`corpus.py`), or a MUSDB18-HQ-style folder of real stems,
`<track>/{vocals,drums,bass,other}.wav`, mapped as vocals→vocals, drums→drums, bass→bass,
other→instruments, and fx silent (MUSDB has no fx stem; its effects live in "other").
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import butter, sosfiltfilt

from .. import audio
from ..stem_map import composition
from . import corpus

MUSDB_MAP = {"vocals": "vocals", "drums": "drums", "bass": "bass", "instruments": "other"}


def _pack(folder: Path, stems: tuple[str, ...], clip_dirs: list[Path], reader) -> Path:
    """Write every clip's stems, end to end, into folder/pack.int16 with a clip table."""
    lengths = [reader(c, stems[0]).shape[-1] for c in clip_dirs]
    total = int(sum(lengths))
    pack = np.lib.format.open_memmap(folder / "pack.tmp.npy", "w+", np.int16, (len(stems), 2, total))
    offset = 0
    for clip, length in zip(clip_dirs, lengths):
        for s, stem in enumerate(stems):
            x = reader(clip, stem)
            pack[s, :, offset:offset + length] = np.round(np.clip(x, -1, 1) * 32767).astype(np.int16)
        offset += length
    pack.flush()
    del pack
    (folder / "pack.tmp.npy").replace(folder / "pack.npy")
    table = {"stems": list(stems), "clips": [str(c.name) for c in clip_dirs], "lengths": lengths}
    (folder / "pack.json").write_text(json.dumps(table))
    return folder / "pack.npy"


def _corpus_reader(clip: Path, stem: str) -> np.ndarray:
    return sf.read(clip / f"{stem}.flac", dtype="float32", always_2d=True)[0].T


def _musdb_reader(track: Path, stem: str) -> np.ndarray:
    if stem not in MUSDB_MAP:  # fx: silent, as long as the track
        return np.zeros((2, audio.probe(track / "vocals.wav").output_frames), np.float32)
    return audio.decode(track / f"{MUSDB_MAP[stem]}.wav")


@dataclass
class StemStore:
    """Memory-mapped stems of one split: data (S, 2, total) int16 and clip boundaries."""

    stems: tuple[str, ...]
    data: np.ndarray
    starts: np.ndarray
    lengths: np.ndarray

    @classmethod
    def open(cls, folder: Path, stems: tuple[str, ...], musdb: bool = False) -> "StemStore":
        folder = Path(folder)
        table_path = folder / "pack.json"
        if musdb:
            dirs = sorted(p for p in folder.iterdir() if (p / "vocals.wav").exists())
            reader = _musdb_reader
        else:
            dirs = corpus.clips(folder)
            reader = _corpus_reader
        if not dirs:
            raise FileNotFoundError(f"no clips under {folder}")
        table = json.loads(table_path.read_text()) if table_path.exists() else None
        if not table or table["stems"] != list(stems) or table["clips"] != [d.name for d in dirs]:
            _pack(folder, stems, dirs, reader)
            table = json.loads(table_path.read_text())
        data = np.load(folder / "pack.npy", mmap_mode="r")
        lengths = np.array(table["lengths"])
        return cls(stems, data, np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    def crop(self, stem: int, clip: int, start: int, length: int) -> np.ndarray:
        a = self.starts[clip] + start
        return self.data[stem, :, a:a + length].astype(np.float32) / 32767

    def clip_stems(self, clip: int) -> np.ndarray:
        a, n = self.starts[clip], self.lengths[clip]
        return self.data[:, :, a:a + n].astype(np.float32) / 32767


@dataclass
class Augment:
    """Per-example augmentation; `augment_for` gives each task's defaults."""

    gain_db: float = 5.0
    dropout: float = 0.1
    coherent: float = 0.25
    lowpass: float = 0.5
    lowpass_hz: tuple[float, float] = (8000.0, 20000.0)  # cut-off drawn log-uniformly in this range
    polarity: bool = True
    swap: bool = True
    # Speech: the SNR of the first stem over the rest, redrawn after remixing. Without it the
    # remix adds two clips' independent speech levels and gains to the corpus's −5…20 dB
    # (measured on the speech corpus: 5th–95th percentile −7.8…+31.7 dB, 2 % below −10 dB).
    snr_db: tuple[float, float] | None = None
    near_clean: float = 0.0  # share of examples at 30–45 dB (clean input must pass untouched)
    # Music: every corpus clip holds all five stems throughout, but songs have sparse passages
    # (a drum intro, an a-cappella break, an instrumental bridge). `sparse`: share of examples
    # that keep each stem with probability 1/2 (at least one); `gaps`: chance per stem of a
    # silent stretch. Off unless a run asks (`locoserve train --sparse --gaps`; README).
    sparse: float = 0.0
    gaps: float = 0.0
    gap_seconds: tuple[float, float] = (0.5, 3.0)


def augment_for(kind: str) -> Augment:
    """Speech: band limits down to telephone bandwidth (real recordings come from 8–48 kHz
    sources). Music: more coherent examples (whole produced songs, as users upload)."""
    if kind == "speech":
        return Augment(lowpass=0.4, lowpass_hz=(3400.0, 20000.0), coherent=0.3,
                       snr_db=(-5.0, 20.0), near_clean=0.08)
    return Augment(coherent=0.4)


def gap_envelope(rng: np.random.Generator, n: int, seconds: tuple[float, float],
                 fade_s: float = 0.03, sr: int = 44100) -> np.ndarray:
    """(n,) gain: 1, except one silent stretch of `seconds` (clipped to n) at a random place,
    entered and left through `fade_s` raised-cosine fades, as a part stops and comes back."""
    env = np.ones(n, np.float32)
    length = min(n, int(rng.uniform(*seconds) * sr))
    start = int(rng.integers(0, n - length + 1))
    env[start:start + length] = 0.0
    f = int(fade_s * sr)
    ramp = (0.5 - 0.5 * np.cos(np.linspace(0, np.pi, f))).astype(np.float32)
    if start >= f:
        env[start - f:start] = ramp[::-1]
    if start + length + f <= n:
        env[start + length:start + length + f] = ramp
    return env


def _targets(stems: np.ndarray, store_stems: tuple[str, ...], outputs: tuple[str, ...]) -> np.ndarray:
    """Map store stems to model outputs (`models.stem_map`: 'instrumental' is all but vocals)."""
    return np.stack([stems[list(idx)].sum(axis=0) for idx in composition(outputs, store_stems)])


class Remixer:
    def __init__(self, store: StemStore, outputs: tuple[str, ...], seconds: float,
                 augment: Augment = Augment(), seed: int = 0, clips: np.ndarray | None = None):
        self.store, self.outputs = store, outputs
        self.length = round(seconds * 44100)
        self.aug = augment
        self.rng = np.random.default_rng(seed)
        self.clips = np.arange(len(store)) if clips is None else clips
        self.clips = self.clips[store.lengths[self.clips] >= self.length]
        if len(self.clips) == 0:
            raise ValueError(f"no clip is {seconds} s long")

    def example(self) -> tuple[np.ndarray, np.ndarray]:
        """(mixture (2, L), targets (S, 2, L)); the mixture is exactly the targets' sum."""
        rng, store, n = self.rng, self.store, self.length
        coherent = rng.random() < self.aug.coherent
        if coherent:
            clip = rng.choice(self.clips)
            start = rng.integers(0, store.lengths[clip] - n + 1)
        stems = []
        for s in range(len(store.stems)):
            if not coherent:
                clip = rng.choice(self.clips)
                start = rng.integers(0, store.lengths[clip] - n + 1)
            x = store.crop(s, clip, start, n)
            x *= 10 ** (rng.uniform(-self.aug.gain_db, self.aug.gain_db) / 20)
            if self.aug.polarity and rng.random() < 0.5:
                x = -x
            if self.aug.swap and rng.random() < 0.5:
                x = x[::-1]
            if rng.random() < self.aug.dropout:
                x = np.zeros_like(x)
            elif self.aug.gaps and rng.random() < self.aug.gaps:
                x = x * gap_envelope(rng, n, self.aug.gap_seconds)
            stems.append(x)
        stems = np.stack(stems)
        if self.aug.sparse and rng.random() < self.aug.sparse:
            keep = rng.random(len(stems)) < 0.5
            keep[rng.integers(len(stems))] = True
            stems[~keep] = 0.0
        if rng.random() < self.aug.lowpass:
            lo, hi = self.aug.lowpass_hz
            sos = butter(8, float(np.exp(rng.uniform(np.log(lo), np.log(hi)))), fs=44100, output="sos")
            stems = sosfiltfilt(sos, stems, axis=-1)
        if self.aug.snr_db is not None:
            stems = self._set_snr(stems)
        targets = _targets(stems, store.stems, self.outputs).astype(np.float32)
        return targets.sum(0), targets

    def _set_snr(self, stems: np.ndarray) -> np.ndarray:
        """Scale all stems but the first to a drawn SNR below it; a silent side stays silent."""
        rng = self.rng
        near_clean = rng.random() < self.aug.near_clean
        snr = rng.uniform(30.0, 45.0) if near_clean else rng.uniform(*self.aug.snr_db)
        target_e = float(np.square(stems[0]).sum())
        rest_e = float(np.square(stems[1:]).sum())
        if target_e < 1e-10 or rest_e < 1e-10:
            return stems
        stems = stems.copy()
        stems[1:] *= np.sqrt(target_e / rest_e * 10 ** (-snr / 10))
        peak = np.abs(stems.sum(0)).max()
        if peak > 0.99:  # keep the mixture in range, as a recording would be
            stems *= 0.99 / peak
        return stems

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        pairs = [self.example() for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
