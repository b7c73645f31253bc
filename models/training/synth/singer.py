"""A real-timbre singer: recorded words and synthesizer voices re-sung on the melody with WORLD.

The source is one "singer" per line: a real speaker's recorded words (`words`, one language
folder), or sentences read by a Flite/Festival voice (`tts`). The source is analysed with
WORLD (f0, spectral envelope, aperiodicity) and cut into syllables at its voiced runs; each
note of the melody takes the next syllable, keeps its consonant onset before the beat,
stretches its voiced nucleus to the note and gives it the note's pitch (scoop, vibrato,
drift). Only pitch and timing change: the timbre is the speaker's own, here moved by a
random formant shift so that one speaker gives several singers. Notes of a phrase join
legato; phrases start with a breath; some lines are doubled (detuned, delayed, panned) or
get a harmony a third or fourth above; some stay spoken, like a rap or a spoken verse.
Held-out speakers and voices (see `words`, `tts`) sing only on the test side.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from . import compose, library, tts, voice, words
from .fx import pan

SR = library.SR
FRAME = voice.FRAME_MS / 1000
FFT = 1024


def _cut(feats: voice.Features) -> list[voice.Features]:
    """Syllables of an utterance: each voiced run of ≥ 40 ms with up to 80 ms of the
    unvoiced sound before it (the onset consonant) and 60 ms after (the coda)."""
    voiced = feats.f0 > 0
    edges = np.flatnonzero(np.diff(np.concatenate([[0], voiced.astype(int), [0]])))
    out = []
    for a, b in zip(edges[::2], edges[1::2]):
        if b - a < 8:
            continue
        lo, hi = max(0, a - 16), min(len(voiced), b + 12)
        f0 = feats.f0[lo:hi].copy()
        f0[: a - lo] = 0
        f0[b - lo:] = 0
        out.append(voice.Features(f0, feats.sp[lo:hi], feats.ap[lo:hi], feats.rate))
    return out


# Where WORLD analyses of recorded words are kept between clips and processes (set by the
# corpus renderer to a folder inside the corpus); None keeps them in memory only.
CACHE_DIR: Path | None = None


def _analysis(path: str) -> voice.Features | None:
    cached = CACHE_DIR / (hashlib.sha1(path.encode()).hexdigest()[:16] + ".npz") if CACHE_DIR else None
    if cached and cached.exists():
        z = np.load(cached)
        return voice.Features(z["f0"], z["sp"].astype(np.float64), z["ap"].astype(np.float64), SR) if z["f0"].size else None
    x = library.trim(library.load(path, mono=True), -40.0)
    feats = voice.analyse(x / (np.abs(x).max() + 1e-9) * 0.5, SR, FFT)
    if feats:  # float32, as cached: a clip is the same whether its words came from the cache or not
        feats = voice.Features(feats.f0, feats.sp.astype(np.float32).astype(np.float64),
                               feats.ap.astype(np.float32).astype(np.float64), SR)
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.npz")
        empty = np.zeros(0)
        np.savez(tmp, f0=feats.f0 if feats else empty, sp=feats.sp.astype(np.float32) if feats else empty,
                 ap=feats.ap.astype(np.float32) if feats else empty)
        tmp.replace(cached)
    return feats


@lru_cache(maxsize=400)
def _word_syllables(path: str) -> tuple[voice.Features, ...]:
    feats = _analysis(path)
    return tuple(_cut(feats)) if feats else ()


def _formant_shift(feats: voice.Features, factor: float) -> voice.Features:
    """Scale the spectral envelope's frequency axis (factor > 1 moves formants up)."""
    bins = feats.sp.shape[1]
    src = np.clip(np.arange(bins) / factor, 0, bins - 1)
    lo = np.floor(src).astype(int)
    hi = np.minimum(lo + 1, bins - 1)
    w = src - lo
    sp = feats.sp[:, lo] * (1 - w) + feats.sp[:, hi] * w
    return voice.Features(feats.f0, sp, feats.ap, feats.rate)


def syllable_source(rng: np.random.Generator, split: str, real: bool = False):
    """A function returning the singer's next syllable, and the singer's name."""
    langs = words.languages(split) if library.available(words.PACKAGE) else []
    pool: list[voice.Features] = []
    if langs and (real or rng.random() < 0.6):
        for _ in range(4):  # a folder of 8 kHz recordings may yield few voiced syllables: try another
            lang = langs[rng.integers(len(langs))]
            files = words._folders()[lang]
            for i in rng.permutation(len(files))[:10]:
                pool += _word_syllables(files[i])
            if len(pool) >= 4:
                break
        name = f"words:{lang}"
    else:
        voices = [v for v in tts.voices(split) if v.engine in ("flite", "festival")]
        v = voices[rng.integers(len(voices))]
        for _ in range(3):
            x = tts.read_aloud(rng, v, 4.0)
            feats = voice.analyse(x, SR, FFT)
            pool += _cut(feats) if feats else []
        name = v.speaker
    if not pool:
        return None, name
    shift = float(rng.uniform(0.9, 1.12)) if not real else float(rng.uniform(0.96, 1.04))
    order = rng.permutation(len(pool))
    state = {"i": 0}

    def next_syllable() -> voice.Features:
        feats = pool[order[state["i"] % len(pool)]]
        state["i"] += 1
        return _formant_shift(feats, shift) if abs(shift - 1) > 0.01 else feats

    return next_syllable, name


def breath(rng: np.random.Generator, seconds: float) -> np.ndarray:
    n = int(seconds * SR)
    y = sosfilt(butter(2, [rng.uniform(500, 1500), rng.uniform(3000, 7000)], "bandpass", fs=SR, output="sos"),
                rng.standard_normal(n))
    env = np.sin(np.linspace(0, np.pi, n)) ** 2
    return y * env / (library.rms(y * env) + 1e-9)


def sung_line(rng: np.random.Generator, notes: list[compose.SungNote], seconds: float, next_syllable,
              detune: float = 0.0, delay: float = 0.0, breaths: bool = True) -> np.ndarray:
    """Mono line at 44.1 kHz: one syllable per note, legato within phrases."""
    line = np.zeros(int(seconds * SR) + SR)
    level = 0.1
    breathy = float(rng.uniform(0, 0.3))
    prev_end = -1.0
    for note in notes:
        feats = next_syllable()
        y, onset = voice.sing_features(rng, feats, note.dur + 0.03, note.pitch, breathy, detune)
        if breaths and note.start - prev_end > 0.5 and rng.random() < 0.6:
            b = breath(rng, rng.uniform(0.15, 0.35)) * level * 10 ** (rng.uniform(-24, -14) / 20)
            voice.place(line, b, note.start - onset - b.size / SR - 0.03 + delay, 10.0, SR)
        voice.place(line, y * rng.uniform(0.75, 1.15) * level, note.start - onset + delay, 15.0, SR)
        prev_end = note.start + note.dur
    return line[: int(round(seconds * SR))]


def spoken_line(rng: np.random.Generator, song: compose.Song, seconds: float, split: str) -> np.ndarray:
    """Words on the beat without a melody (rap, a spoken verse)."""
    langs = words.languages(split)
    if not langs:
        return np.zeros(int(round(seconds * SR)))
    lang = langs[rng.integers(len(langs))]
    files = words._folders()[lang]
    n = int(round(seconds * SR))
    line = np.zeros(n + SR)
    t = float(rng.uniform(0, song.bar))
    step = song.beat / float(rng.choice([1, 2]))
    while t < seconds:
        if rng.random() < 0.8:
            y = words.word(files[rng.integers(len(files))]) * 0.05
            i = int(t * SR)
            y = y[: line.size - i]
            line[i:i + y.size] += y
            t += max(step, round(y.size / SR / step + 0.49) * step)
        else:
            t += step * float(rng.choice([1, 2, 4]))
    return line[:n]


def vocals(rng: np.random.Generator, song: compose.Song, seconds: float, split: str,
           real: bool = False) -> tuple[np.ndarray, str] | None:
    """(2, n) lead vocal with optional double and harmony, and the singer's name; None when
    no real or synthesized source is installed."""
    female = rng.random() < 0.5
    low, high = (55, 72) if female else (47, 64)
    notes = compose.melody(rng, song, seconds, low, high)
    if not real and rng.random() < 0.12:
        lead = spoken_line(rng, song, seconds, split)
        return pan(lead, rng.uniform(-0.1, 0.1)), "spoken"
    next_syllable, name = syllable_source(rng, split, real)
    if next_syllable is None:
        return None
    lead = sung_line(rng, notes, seconds, next_syllable)
    out = pan(lead, rng.uniform(-0.1, 0.1))
    if rng.random() < 0.35:  # a double, left and right
        for side in (-1, 1):
            d = sung_line(rng, notes, seconds, next_syllable, detune=rng.uniform(-0.12, 0.12),
                          delay=rng.uniform(0.008, 0.03), breaths=False)
            out += pan(d, side * rng.uniform(0.4, 0.8)) * 10 ** (rng.uniform(-10, -5) / 20)
    if rng.random() < 0.25:  # a harmony line a third or a fourth above
        up = int(rng.choice([3, 4, 5]))
        harm = [compose.SungNote(n.start, n.dur, n.pitch + up) for n in notes if rng.random() < 0.8]
        h = sung_line(rng, harm, seconds, next_syllable, breaths=False)
        out += pan(h, rng.uniform(-0.5, 0.5)) * 10 ** (rng.uniform(-9, -4) / 20)
    return out, name
