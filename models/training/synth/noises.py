"""Noise scenes for the speech corpus: real recorded sounds wherever a recording exists.

A scene is one to three layers, each drawn from:
- `events`: recorded one-shots (drum and percussion hits, bells, snaps, clicks, phones,
  doors, glass) at random times: clatter, typing, a kitchen, a workshop;
- `loops`: recorded drum breaks, percussion and bass loops (music in the background);
- `ambience`: recorded pads, drones, hums, crowd, applause, vinyl hiss;
- `babble`: several real speakers' words and synthesizer voices talking at once;
- `music`: a FluidSynth band (drums, bass, keys; no singer);
- procedural `stationary` noise (coloured, mains hum with harmonics, fan, wind, rumble,
  tape hiss) and `crackle` (vinyl clicks over hiss).
Recorded files are split by `library.held_out` on their path, speakers as in `words`/`tts`,
so a test scene's recordings are never heard in training.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from . import compose, fluid, library, tts, words

SR = library.SR

EVENT_GLOBS = {
    "sonic-pi-samples": ["drum_*", "perc_*", "elec_*", "tabla_*", "glitch_perc*", "mehackit_phone*",
                         "misc_*", "bd_*", "sn_*"],
    "lmms-common": ["drums/*", "misc/*", "effects/*", "drumsynth/*/*"],
    "hydrogen-drumkits": ["*/*"],
}
LOOP_GLOBS = {"sonic-pi-samples": ["loop_*"], "lmms-common": ["beats/*", "bassloops/*", "latin/*"]}
AMBIENCE_GLOBS = {"sonic-pi-samples": ["ambi_*", "vinyl_hiss*"], "lmms-common": ["stringsnpads/*", "misc/applause*",
                                                                               "misc/raving_crowd*"]}
KINDS = ("events", "loops", "ambience", "babble", "music", "stationary", "crackle")
WEIGHTS = (0.18, 0.12, 0.12, 0.18, 0.12, 0.2, 0.08)


@lru_cache(maxsize=8)
def _pool(kind: str, split: str) -> tuple[str, ...]:
    globs = {"events": EVENT_GLOBS, "loops": LOOP_GLOBS, "ambience": AMBIENCE_GLOBS}[kind]
    out: list[str] = []
    for package, patterns in globs.items():
        if not library.available(package):
            continue
        for pattern in patterns:
            out += [str(p) for p in library.files(package, pattern, split=split)]
    return tuple(sorted(set(out)))


def _fit(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Loop or crop mono `x` to n samples from a random offset."""
    if x.size == 0:
        return np.zeros(n)
    reps = int(np.ceil((n + x.size) / x.size))
    tiled = np.tile(x, reps)
    start = int(rng.integers(0, x.size))
    return tiled[start:start + n].copy()


def events(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    pool = _pool("events", split)
    out = np.zeros(n)
    rate = rng.uniform(0.5, 6.0)  # events per second
    chosen = [pool[i] for i in rng.integers(len(pool), size=int(rng.integers(2, 8)))]
    t = rng.exponential(1 / rate)
    while t < n / SR:
        y = library.trim(library.load(chosen[rng.integers(len(chosen))], mono=True))[: int(2.5 * SR)]
        i = int(t * SR)
        y = y[: n - i] * 10 ** (rng.uniform(-12, 0) / 20)
        out[i:i + y.size] += y
        t += rng.exponential(1 / rate)
    return out


def loops(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    pool = _pool("loops", split)
    return _fit(library.trim(library.load(pool[rng.integers(len(pool))], mono=True)), n, rng)


def ambience(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    pool = _pool("ambience", split)
    return _fit(library.load(pool[rng.integers(len(pool))], mono=True), n, rng)


def babble(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    out = np.zeros(n)
    langs, voices = words.languages(split), tts.voices(split)
    for _ in range(int(rng.integers(3, 9))):
        if langs and rng.random() < 0.6:
            y = words.phrase_line(rng, n / SR, langs[rng.integers(len(langs))])
        else:
            y = tts.read_aloud(rng, voices[rng.integers(len(voices))], n / SR)
        out += y / (library.rms(y) + 1e-9) * 10 ** (rng.uniform(-6, 3) / 20)
    return out


def music(rng: np.random.Generator, n: int, split: str) -> np.ndarray:
    seconds = n / SR
    song = compose.new_song(rng, seconds)
    parts = [compose.drums(rng, song), compose.bass(rng, song)] + compose.instruments(rng, song)
    if rng.random() < 0.4:
        parts = parts[2:] or parts
    return fluid.render(parts, seconds).mean(axis=0)[:n]


def coloured(rng: np.random.Generator, n: int) -> np.ndarray:
    alpha = rng.uniform(0, 2.2)  # 0 white, 1 pink, 2 brown
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[1:] /= f[1:] ** (alpha / 2)
    spec[0] = 0
    return np.fft.irfft(spec, n)


def stationary(rng: np.random.Generator, n: int, split: str = "train") -> np.ndarray:
    t = np.arange(n) / SR
    kind = rng.choice(["coloured", "hum", "fan", "wind", "rumble", "hiss"])
    if kind == "coloured":
        return coloured(rng, n)
    if kind == "hum":  # mains hum and buzz: a harmonic series on 50 or 60 Hz, a little noise
        f0 = rng.choice([50.0, 60.0])
        y = sum(rng.uniform(0.1, 1) / k ** rng.uniform(0.3, 1.5) * np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3))
                for k in range(1, int(rng.integers(3, 40))))
        return y + 0.05 * coloured(rng, n) * np.std(y) / (np.std(coloured(rng, n)) + 1e-12)
    if kind == "fan":  # broadband air noise with a blade tone
        y = sosfilt(butter(2, rng.uniform(800, 4000), fs=SR, output="sos"), rng.standard_normal(n))
        f = rng.uniform(80, 400)
        return y + rng.uniform(0.05, 0.4) * np.std(y) * np.sin(2 * np.pi * f * t) * np.sqrt(2)
    if kind == "wind":  # low-passed noise under a slow random gust envelope
        y = sosfilt(butter(2, rng.uniform(150, 900), fs=SR, output="sos"), rng.standard_normal(n))
        gust = np.interp(t, np.linspace(0, t[-1] + 1e-3, 8), rng.uniform(0.2, 1.0, 8))
        return y * gust
    if kind == "rumble":  # traffic, engine, a car's interior
        y = sosfilt(butter(2, rng.uniform(60, 250), fs=SR, output="sos"), rng.standard_normal(n))
        f = rng.uniform(25, 90) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.05, 0.3) * t))
        return y + 0.5 * np.std(y) * np.sin(2 * np.pi * np.cumsum(f) / SR)
    return sosfilt(butter(2, rng.uniform(2000, 6000), "highpass", fs=SR, output="sos"), rng.standard_normal(n))


def crackle(rng: np.random.Generator, n: int, split: str = "train") -> np.ndarray:
    clicks = np.zeros(n)
    k = int(rng.uniform(2, 40) * n / SR)
    clicks[rng.integers(0, n, k)] = rng.standard_normal(k) * rng.uniform(5, 30)
    clicks = sosfilt(butter(2, rng.uniform(1500, 8000), fs=SR, output="sos"), clicks)
    hiss = sosfilt(butter(2, 3000, "highpass", fs=SR, output="sos"), rng.standard_normal(n)) * 0.3
    return clicks + hiss


SOURCES = {"events": events, "loops": loops, "ambience": ambience, "babble": babble, "music": music,
           "stationary": stationary, "crackle": crackle}


def layer(rng: np.random.Generator, kind: str, n: int, split: str) -> np.ndarray:
    y = SOURCES[kind](rng, n, split)[:n]
    y = np.pad(y, (0, n - y.size))
    if library.rms(y) < 1e-7:  # a silent draw (a near-empty file): coloured noise instead
        y = coloured(rng, n)
    return y / library.rms(y)


def scene(rng: np.random.Generator, n: int, split: str, kinds: tuple[str, ...] = KINDS,
          weights: tuple[float, ...] = WEIGHTS) -> tuple[np.ndarray, list[str]]:
    """A unit-RMS mono noise scene of 1–3 layers and the names of its layers."""
    p = np.array(weights, dtype=float) / np.sum(weights)
    count = int(rng.choice([1, 2, 3], p=[0.55, 0.33, 0.12]))
    names = [str(k) for k in rng.choice(kinds, size=count, p=p)]
    y = sum(layer(rng, k, n, split) * 10 ** (rng.uniform(-10, 0) / 20 if i else 0) for i, k in enumerate(names))
    return y / library.rms(y), names
