"""Instrument and bass parts played on recorded samples instead of a SoundFont.

Two recorded sources beside FluidR3: Freepats patches (`freepats`: multi-sampled piano,
guitars, basses, strings, brass, reeds, flutes) play the song's note lists; recorded
phrases and loops (lmms-common's instruments, strings and pads, latin and bass loops; Sonic
Pi's guitar, bass and piano ambiences) are laid under the song as a producer drops in a
sample. Recordings are split by file or patch name (`library.held_out`).
"""

from __future__ import annotations

import numpy as np

from . import compose, freepats, library
from .fluid import Part

SR = library.SR
# GM program ranges per role, for choosing a Freepats patch that fits the part
ROLE_PATCHES = {
    "chords": list(range(0, 8)) + list(range(16, 22)) + list(range(24, 32)),
    "arpeggio": list(range(0, 16)) + list(range(24, 28)) + [46],
    "strum": list(range(24, 32)),
    "pad": list(range(40, 56)) + list(range(88, 96)),
    "counter": list(range(40, 48)) + list(range(56, 80)),
    "bass": list(range(32, 40)),
}
PHRASES = {"instruments": [("lmms-common", "instruments/*"), ("lmms-common", "stringsnpads/*"),
                           ("lmms-common", "latin/*"), ("sonic-pi-samples", "guit_*"),
                           ("sonic-pi-samples", "ambi_piano*"), ("sonic-pi-samples", "ambi_glass*"),
                           ("sonic-pi-samples", "ambi_drone*")],
           "bass": [("lmms-common", "bassloops/*"), ("lmms-common", "basses/*"), ("sonic-pi-samples", "bass_*")]}
# phrases whose recordings hold voices: never in an instrument stem
VOCAL_NAMES = ("choir", "chorus", "voxy", "vox")


def patch_for(rng: np.random.Generator, role: str, split: str) -> str | None:
    pool = freepats.patches(split, ROLE_PATCHES.get(role, range(0, 96)))
    return pool[rng.integers(len(pool))] if pool else None


def play_part(rng: np.random.Generator, part: Part, patch: str, seconds: float) -> np.ndarray:
    """(2, n) the part's notes on a Freepats patch, panned as the part asks."""
    n = int(round(seconds * SR))
    out = np.zeros(n + 2 * SR)
    for note in part.notes:
        i = int(note.start * SR)
        if i >= n:
            continue
        y = freepats.play(patch, note.pitch, note.dur, rng) * (note.vel / 127) ** 1.5
        m = min(y.size, out.size - i)
        out[i:i + m] += y[:m]
    angle = (np.clip(part.pan, 0, 127) / 127) * np.pi / 2
    return np.stack([np.cos(angle) * out[:n], np.sin(angle) * out[:n]]) * np.sqrt(2)


def phrase(rng: np.random.Generator, stem: str, seconds: float, split: str) -> np.ndarray | None:
    """(2, n) a recorded phrase or loop, repeated to fill `seconds`, from a random point."""
    files = [f for pkg, pat in PHRASES[stem] if library.available(pkg)
             for f in library.files(pkg, pat, split=split) if not any(v in f.name for v in VOCAL_NAMES)]
    if not files:
        return None
    x = library.stereo(library.trim(library.load(files[rng.integers(len(files))])))
    if x.shape[1] < SR // 10:
        return None
    n = int(round(seconds * SR))
    gap = np.zeros((2, int(rng.uniform(0, 0.5) * SR)))
    unit = np.concatenate([x, gap], axis=1)
    reps = int(np.ceil(n / unit.shape[1])) + 1
    start = int(rng.integers(0, unit.shape[1]))
    return np.tile(unit, reps)[:, start:start + n]


def roles_of(parts: list[Part]) -> list[str]:
    """The compose role of each accompaniment part, from its program list."""
    out = []
    for p in parts:
        out.append(next((r for r, progs in compose.ROLE_PROGRAMS.items() if p.program in progs), "chords"))
    return out
