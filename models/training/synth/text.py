"""Sentences to read aloud: real prose from Debian's fortune collections, per language.

A synthesizer reading real sentences gets real prosody (phrasing, stress, question
intonation, function words), which pseudo-words do not. Where a language has no collection
the caller falls back to pseudo-words (`voice.sentence`).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np

ROOT = Path("/usr/share/games/fortunes")
# Files or folders per language (fortunes, fortunes-de, -es, -it, -cs, -ru, -pl, -br, -ga).
SOURCES = {
    "en": ["fortunes", "literature", "wisdom", "people", "science", "humorists", "education",
           "platitudes", "miscellaneous", "work", "food", "pets", "love", "politics", "law", "news",
           "kids", "riddles", "sports", "medicine", "magic", "computers", "startrek"],
    "de": ["de"], "es": ["es"], "it": ["it", "italia", "definizioni", "leggi"], "cs": ["cs"],
    "ru": ["ru"], "pl": ["pl"], "pt": ["brasil"], "ga": ["ga"], "sk": ["sk"],
}
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_BAD = re.compile(r"[0-9@#$%^&*_=+<>{}\[\]|\\/~`]")


def _read(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="ignore")


@lru_cache(maxsize=16)
def sentences(language: str) -> tuple[str, ...]:
    """Clean sentences of 3–22 words in `language`; empty if no collection is installed."""
    out: list[str] = []
    for name in SOURCES.get(language, []):
        path = ROOT / name
        paths = sorted(p for p in path.iterdir() if p.suffix not in (".dat", ".u8")) if path.is_dir() else [path]
        for p in paths:
            if not p.is_file():
                continue
            for entry in _read(p).split("\n%\n"):
                lines = [ln for ln in entry.splitlines() if not ln.strip().startswith("--")]
                text = " ".join(" ".join(lines).split())
                for s in _SENTENCE.split(text):
                    s = s.strip(" \"'`()-:;")
                    words = s.split()
                    if 3 <= len(words) <= 22 and not _BAD.search(s) and sum(c.isalpha() for c in s) > 0.7 * len(s):
                        out.append(s)
    return tuple(sorted(set(out)))


def sentence(rng: np.random.Generator, language: str) -> str | None:
    pool = sentences(language)
    return str(pool[rng.integers(len(pool))]) if pool else None
