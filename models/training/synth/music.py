"""One synthetic music clip as five stems whose exact sum is the mixture.

Levels: each stem is scaled to a target RMS (vocals −20, drums −21, bass −22, instruments
−21, fx −28 dBFS) with a random ±3.5 dB offset; then one common gain puts the mixture peak
between −4 and −1 dBFS. A stem that comes out near-silent (a preset missing from the
SoundFont, say) makes the clip be drawn again from the next sub-seed.
"""

from __future__ import annotations

import numpy as np

from . import compose, fluid, voice
from .fx import fx_stem, pan, reverb

STEMS = ("vocals", "drums", "bass", "instruments", "fx")
TARGET_RMS_DB = {"vocals": -20.0, "drums": -21.0, "bass": -22.0, "instruments": -21.0, "fx": -28.0}
SILENT_PEAK_DB = -40.0


def _db(x: float) -> float:
    return 20 * np.log10(max(x, 1e-12))


def _vocals(rng: np.random.Generator, song: compose.Song, seconds: float) -> np.ndarray:
    female = rng.random() < 0.5
    low, high = (55, 72) if female else (48, 65)
    variant = str(rng.choice(voice.FEMALE if female else voice.MALE))
    language = str(rng.choice(voice.LANGUAGES))
    sung = compose.melody(rng, song, seconds, low, high)
    line = voice.vocal_line(rng, sung, seconds, f"{language}+{variant}")
    lead = reverb(rng, pan(line, rng.uniform(-0.15, 0.15)), rng.uniform(0.1, 0.3))
    if rng.random() < 0.3:  # backing "aahs" a third below, like MUSDB's backing vocals in the vocals stem
        choir = fluid.render([compose.backing_choir(rng, sung)], seconds)
        lead = lead + choir / (np.sqrt(np.mean(choir ** 2)) + 1e-9) * np.sqrt(np.mean(lead ** 2)) * 0.4
    return lead


def _draw(rng: np.random.Generator, seconds: float) -> dict[str, np.ndarray]:
    song = compose.new_song(rng, seconds)
    stems = {
        "drums": fluid.render([compose.drums(rng, song)], seconds),
        "bass": fluid.render([compose.bass(rng, song)], seconds),
        "instruments": fluid.render(compose.instruments(rng, song), seconds),
    }
    stems["vocals"] = _vocals(rng, song, seconds)
    stems["fx"] = fx_stem(rng, song.bar, seconds)
    n = int(round(seconds * fluid.SAMPLE_RATE))
    return {k: np.asarray(stems[k], dtype=np.float64)[:, :n] for k in STEMS}


def render_clip(seed: int, seconds: float) -> dict[str, np.ndarray]:
    """Five (2, n) float32 stems for `seed`; deterministic."""
    for attempt in range(8):
        rng = np.random.default_rng([seed, attempt])
        stems = _draw(rng, seconds)
        if all(_db(np.abs(s).max()) > SILENT_PEAK_DB for s in stems.values()):
            break
    else:
        raise RuntimeError(f"seed {seed}: could not draw a clip without a silent stem")
    for name, s in stems.items():
        rms = np.sqrt(np.mean(s ** 2))
        s *= 10 ** ((TARGET_RMS_DB[name] + rng.uniform(-3.5, 3.5)) / 20) / rms
    mix_peak = np.abs(sum(stems.values())).max()
    gain = 10 ** (rng.uniform(-4, -1) / 20) / mix_peak
    stem_peak = max(np.abs(s).max() for s in stems.values()) * gain
    if stem_peak > 0.99:  # keep every stem representable in 16-bit PCM too
        gain *= 0.99 / stem_peak
    return {k: (v * gain).astype(np.float32) for k, v in stems.items()}
