"""Recorded instruments from Freepats (`freepats`): Gravis Ultrasound patches, read directly.

FluidSynth does not load GUS `.pat` files, so this reads them: a patch holds one or more
recorded waveforms, each with the key range it covers, its root frequency and a loop. A note
plays the waveform whose range holds its pitch, resampled to it, looped while held, with a
release fade. Patches are split by name (`library.held_out`).

Format (GF1PATCH110): a 129-byte file header, a 63-byte instrument header and a 47-byte
layer header, then per waveform a 96-byte header followed by its sample data.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import library

ROOT = Path("/usr/share/midi/freepats")
SR = library.SR


@dataclass(frozen=True)
class Wave:
    data: np.ndarray  # float64 mono
    rate: int
    low: float  # Hz
    high: float
    root: float
    loop: tuple[int, int] | None


def _parse(path: Path) -> list[Wave]:
    raw = path.read_bytes()
    if not raw.startswith(b"GF1PATCH1"):
        return []
    count = struct.unpack_from("<H", raw, 85)[0]
    pos = 129 + 63 + 47
    waves = []
    for _ in range(count):
        if pos + 96 > len(raw):
            break
        size, loop_start, loop_end, rate, low, high, root = struct.unpack_from("<IIIHIII", raw, pos + 8)
        modes = raw[pos + 55]
        pos += 96
        data = raw[pos:pos + size]
        pos += size
        if modes & 1:
            x = np.frombuffer(data[: len(data) // 2 * 2], "<u2" if modes & 2 else "<i2").astype(np.float64)
            x = (x - 32768 if modes & 2 else x) / 32768
            loop = (loop_start // 2, loop_end // 2)
        else:
            x = np.frombuffer(data, np.uint8 if modes & 2 else np.int8).astype(np.float64)
            x = (x - 128 if modes & 2 else x) / 128
            loop = (loop_start, loop_end)
        if x.size < 64 or rate == 0 or root == 0:
            continue
        looping = bool(modes & 4) and 0 <= loop[0] < loop[1] <= x.size and loop[1] - loop[0] > 32
        waves.append(Wave(x, rate, low / 1000, high / 1000, root / 1000, loop if looping else None))
    return waves


@lru_cache(maxsize=128)
def patch(path: str) -> tuple[Wave, ...]:
    return tuple(_parse(Path(path)))


def patches(split: str, programs: range | list[int] | None = None) -> list[str]:
    """Melodic patch files (Tone_000) of one side of the split, optionally by GM program."""
    if not ROOT.is_dir():
        return []
    out = []
    for p in sorted((ROOT / "Tone_000").glob("*.pat")):
        try:
            program = int(p.name[:3])
        except ValueError:
            continue
        if programs is not None and program not in programs:
            continue
        if library.split_of(p.name) == split and patch(str(p)):
            out.append(str(p))
    return out


def play(path: str, midi: float, seconds: float, rng: np.random.Generator | None = None) -> np.ndarray:
    """One note of `seconds` (plus a release) at MIDI pitch `midi`, mono at 44.1 kHz."""
    waves = patch(path)
    freq = 440.0 * 2 ** ((midi - 69) / 12)
    fits = [w for w in waves if w.low <= freq <= w.high] or sorted(waves, key=lambda w: abs(np.log(w.root / freq)))[:1]
    w = fits[0]
    step = freq / w.root * w.rate / SR  # source samples per output sample
    release = int(0.12 * SR)
    n = int(seconds * SR) + release
    pos = np.arange(n) * step
    if w.loop:
        a, b = w.loop
        over = pos >= b
        pos[over] = a + np.mod(pos[over] - a, b - a)
    else:
        n = min(n, int((w.data.size - 1) / step))
        pos = pos[:n]
    y = np.interp(pos, np.arange(w.data.size), w.data)
    end = max(0, y.size - release)
    if y.size > end:
        y[end:] *= np.linspace(1, 0, y.size - end) ** 2
    fade = min(32, y.size)
    y[:fade] *= np.linspace(0, 1, fade)
    return y
