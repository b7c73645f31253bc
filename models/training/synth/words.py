"""Real recorded words (KTuberling's sound themes, `ktuberling-data`): phrases of one speaker.

1,702 words read by native speakers of about 25 languages, one folder per language. A
phrase strings words of one folder together with the pauses of connected speech (short gaps
inside a phrase, longer ones between phrases), with each word's own level and an occasional
overlap where words run into each other. It is real human voice, with each speaker's
microphone and room, which is what a network trained on synthesizers has never heard.

Speakers are split by language folder: the folders in TEST_LANGUAGES (about 4 minutes of
four speakers) are never rendered for training. The Serbian folders hold one recording set
under four spellings and count as one.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np

from . import library

PACKAGE = "ktuberling-data"
TEST_LANGUAGES = ("uk", "el", "gl", "sv")
DUPLICATES = ("sr@ijekavian", "sr@ijekavianlatin", "sr@latin")
SR = library.SR


@lru_cache(maxsize=1)
def _folders() -> dict[str, list[str]]:
    base = library.root(PACKAGE)
    out = {}
    for d in sorted(p for p in base.iterdir() if p.is_dir() and p.name not in DUPLICATES):
        names = [str(f) for f in library.files(PACKAGE, f"{d.name}/*")]
        if names:
            out[d.name] = names
    return out


def languages(split: str) -> list[str]:
    return [lang for lang in _folders() if (lang in TEST_LANGUAGES) == (split == "test")]


def word(path: str) -> np.ndarray:
    """One word, trimmed to its voiced extent with 10 ms fades (the file's silence removed)."""
    return utterance(library.load(path, mono=True))


def utterance(x: np.ndarray) -> np.ndarray:
    """A recorded utterance trimmed to its voiced extent with 10 ms fades, at unit RMS."""
    x = library.trim(x, -40.0).copy()
    f = min(len(x) // 4, int(0.01 * SR))
    if f:
        ramp = np.linspace(0, 1, f)
        x[:f] *= ramp
        x[len(x) - f:] *= ramp[::-1]
    return x / (library.rms(x) + 1e-9)


def phrase_line(rng: np.random.Generator, seconds: float, language: str) -> np.ndarray:
    """Phrases by the speaker of `language` filling about `seconds`; mono 44.1 kHz, RMS-free."""
    return string_together(rng, seconds, _folders()[language], word)


def string_together(rng: np.random.Generator, seconds: float, pool: list[str],
                    load: Callable[[str], np.ndarray]) -> np.ndarray:
    """Utterances of `pool` (each `load`ed at unit RMS) strung into phrases with the pauses of
    connected speech, filling about `seconds`; mono 44.1 kHz at 0.05 of unit RMS while voiced."""
    n = int(round(seconds * SR))
    line = np.zeros(n)
    t = int(rng.uniform(0.05, 0.6) * SR)
    while t < n - int(0.25 * SR):
        for _ in range(int(rng.integers(2, 7))):  # one phrase
            y = load(pool[rng.integers(len(pool))]) * 10 ** (rng.uniform(-4, 3) / 20)
            y = y[: max(0, n - t)]
            line[t:t + y.size] += y
            gap = rng.uniform(-0.04, 0.18) if rng.random() < 0.8 else rng.uniform(0.2, 0.45)
            t += y.size + int(gap * SR)
            if t >= n - int(0.25 * SR):
                break
        t += int(rng.uniform(0.35, 1.2) * SR)
    return line * 0.05
