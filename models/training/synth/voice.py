"""A "vocoder singer" and a speaker: espeak-ng syllables, re-sung on a melody with WORLD.

espeak-ng cannot follow a melody by itself (its pitch controls are relative and drift with
sentence intonation), so each sung note is one espeak-ng syllable analysed with WORLD: the
consonant onset is kept and placed before the beat, the voiced nucleus is stretched to the
note length and given the note's pitch with a scoop, vibrato and drift, the coda is kept.
espeak-ng renders at 22.05 kHz, so this material ends at 11 kHz (training adds random
low-pass on every stem so that "nothing above 11 kHz" is not a shortcut to "vocals").
"""

from __future__ import annotations

import io
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .fluid import ToolMissing

VOICE_RATE = 22050
FRAME_MS = 5.0
LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pl", "cs", "da", "pt", "sv", "fi"]
MALE, FEMALE = ["m1", "m2", "m3", "m4", "m5", "m6"], ["f1", "f2", "f3", "f4"]
ONSETS = ["", "", "b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
          "sh", "ch", "st", "tr", "bl", "fr", "gr", "pl"]
NUCLEI = ["a", "e", "i", "o", "u", "a", "o", "ai", "au", "ei", "oo", "ee", "ou"]
CODAS = ["", "", "", "", "n", "m", "l", "r", "s", "t", "k", "nd", "st"]


@lru_cache(maxsize=1)
def _world():
    try:
        import pyworld
    except ImportError as e:
        raise ToolMissing("pyworld is not installed: pip install -e '.[train]'") from e
    return pyworld


def check_espeak() -> str:
    path = shutil.which("espeak-ng")
    if not path:
        raise ToolMissing("espeak-ng is not installed: apt-get install espeak-ng")
    return path


def word(rng: np.random.Generator, syllables: int = 1) -> str:
    return "".join(rng.choice(ONSETS) + rng.choice(NUCLEI) + rng.choice(CODAS) for _ in range(syllables))


def sentence(rng: np.random.Generator) -> str:
    return " ".join(word(rng, int(rng.integers(1, 4))) for _ in range(int(rng.integers(3, 9))))


def espeak(text: str, voice: str, speed: int = 160, pitch: int = 50) -> np.ndarray:
    """espeak-ng's speech for `text` as float64 mono at 22.05 kHz."""
    out = subprocess.run([check_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", text],
                         capture_output=True, check=True).stdout
    x, sr = sf.read(io.BytesIO(out), dtype="float64")
    if sr != VOICE_RATE:
        raise ToolMissing(f"espeak-ng produced {sr} Hz audio, expected {VOICE_RATE}")
    return x


def trim(x: np.ndarray, threshold: float = 1e-3) -> np.ndarray:
    idx = np.nonzero(np.abs(x) > threshold)[0]
    return x[idx[0]:idx[-1] + 1] if idx.size else x[:0]


def _stretch(frames: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Frames (n, d) sampled at fractional `index` by linear interpolation (log domain)."""
    lo = np.clip(np.floor(index).astype(int), 0, len(frames) - 1)
    hi = np.clip(lo + 1, 0, len(frames) - 1)
    frac = (index - lo)[:, None]
    return np.exp(np.log(frames[lo] + 1e-12) * (1 - frac) + np.log(frames[hi] + 1e-12) * frac)


@dataclass(frozen=True)
class Features:
    """WORLD analysis of one syllable: f0 (Hz, 0 = unvoiced), spectral envelope and
    aperiodicity per 5 ms frame, at `rate`."""

    f0: np.ndarray
    sp: np.ndarray
    ap: np.ndarray
    rate: int


def analyse(x: np.ndarray, rate: int = VOICE_RATE, fft_size: int | None = None) -> Features | None:
    """WORLD analysis; a smaller `fft_size` than WORLD's default (which resolves envelopes
    down to 60 Hz voices) halves the cost at 44.1 kHz and is plenty for re-singing."""
    pw = _world()
    x = np.ascontiguousarray(x, dtype=np.float64)
    if len(x) < rate * 0.05:
        return None
    f0, t = pw.dio(x, rate, f0_floor=60.0, f0_ceil=500.0, frame_period=FRAME_MS)
    f0 = pw.stonemask(x, f0, t, rate)
    if np.count_nonzero(f0 > 0) < 3:
        return None
    kw = {"fft_size": fft_size} if fft_size else {}
    return Features(f0, pw.cheaptrick(x, f0, t, rate, **kw), pw.d4c(x, f0, t, rate, **kw), rate)


def sing_features(rng: np.random.Generator, feats: Features, dur: float, midi: float, breath: float = 0.0,
                  detune: float = 0.0) -> tuple[np.ndarray, float]:
    """Re-sing analysed syllable `feats` as a note of `dur` s at MIDI `midi` (+ `detune`
    semitones): the consonant onset kept before the beat, the voiced nucleus stretched to
    the note with a scoop, vibrato and drift, the coda kept. Returns (audio at feats.rate,
    onset length in s)."""
    pw = _world()
    f0, sp, ap = feats.f0, feats.sp, feats.ap
    voiced = np.nonzero(f0 > 0)[0]
    v0, v1 = int(voiced[0]), int(voiced[-1])
    coda = min(len(f0) - 1 - v1, 16)  # at most 80 ms of coda consonant
    note_frames = max(8, round(dur * 1000 / FRAME_MS))
    nucleus = max(4, note_frames - coda)
    index = np.concatenate([np.arange(v0), np.linspace(v0, v1, nucleus), v1 + 1 + np.arange(coda)])
    sp2, ap2 = _stretch(sp, index), np.clip(_stretch(ap, index), 0, 1)
    voicing = np.interp(index, np.arange(len(f0)), (f0 > 0).astype(float)) > 0.5

    tau = np.arange(len(index)) * FRAME_MS / 1000 - v0 * FRAME_MS / 1000  # time since the voiced onset
    scoop = -rng.uniform(0.2, 1.0) * np.clip(1 - tau / rng.uniform(0.04, 0.09), 0, 1)
    depth, rate = rng.uniform(0.15, 0.5), rng.uniform(4.8, 6.2)
    vibrato = depth * np.clip((tau - 0.15) / 0.2, 0, 1) * np.sin(2 * np.pi * rate * tau + rng.uniform(0, 6.3))
    drift = np.cumsum(rng.normal(0, 0.01, len(index)))
    semis = scoop + vibrato + np.clip(drift, -0.15, 0.15)
    f0_new = np.where(voicing & (index >= v0) & (index <= v1),
                      440.0 * 2 ** ((midi + detune - 69 + semis) / 12), 0.0)
    if breath > 0:
        ap2 = ap2 ** (1 - breath)
    y = pw.synthesize(f0_new, np.ascontiguousarray(sp2), np.ascontiguousarray(ap2), feats.rate, FRAME_MS)
    rms = np.sqrt(np.mean(y ** 2)) + 1e-9
    return y / rms * 0.1, v0 * FRAME_MS / 1000


def sing(rng: np.random.Generator, syllable: np.ndarray, dur: float, midi: float,
         breath: float = 0.0) -> tuple[np.ndarray, float] | None:
    """Re-sing one espeak-ng syllable as a note; returns (audio at 22.05 kHz, onset length in s)."""
    feats = analyse(trim(syllable), VOICE_RATE)
    return None if feats is None else sing_features(rng, feats, dur, midi, breath)


def place(line: np.ndarray, y: np.ndarray, start: float, fade_ms: float = 5.0, rate: int = VOICE_RATE) -> None:
    """Add `y` into `line` (both at `rate`) from `start` seconds, with short edge fades."""
    i0 = int(round(start * rate))
    if i0 < 0:
        y, i0 = y[-i0:], 0
    y = y[:max(0, len(line) - i0)].copy()
    f = min(len(y) // 2, int(fade_ms * rate / 1000))
    if f:
        ramp = np.linspace(0, 1, f)
        y[:f] *= ramp
        y[len(y) - f:] *= ramp[::-1]
    line[i0:i0 + len(y)] += y


def to_output_rate(x: np.ndarray) -> np.ndarray:
    return resample_poly(x, 2, 1)  # 22.05 → 44.1 kHz


def vocal_line(rng: np.random.Generator, notes, seconds: float, voice: str) -> np.ndarray:
    """Sing `notes` (SungNote list) with one espeak voice; mono at 44.1 kHz."""
    line = np.zeros(int(seconds * VOICE_RATE) + 1)
    breath = rng.uniform(0, 0.3)
    for note in notes:
        for _ in range(3):  # a syllable without a voiced part cannot be sung; draw another
            sung = sing(rng, espeak(word(rng), voice, int(rng.integers(130, 190))), note.dur, note.pitch, breath)
            if sung:
                y, onset = sung
                place(line, y * rng.uniform(0.7, 1.2), note.start - onset)
                break
    return to_output_rate(line)[: int(round(seconds * 44100))]


def speech_line(rng: np.random.Generator, seconds: float, voice: str) -> np.ndarray:
    """Sentences with pauses filling `seconds`; mono at 44.1 kHz."""
    line = np.zeros(int(seconds * VOICE_RATE) + 1)
    t = rng.uniform(0.1, 0.6)
    speed, pitch = int(rng.integers(120, 200)), int(rng.integers(25, 75))
    while t < seconds - 0.3:
        y = trim(espeak(sentence(rng), voice, speed, pitch))
        place(line, y, t)
        t += len(y) / VOICE_RATE + rng.uniform(0.15, 0.7)
    return to_output_rate(line)[: int(round(seconds * 44100))]
