"""One music clip as five stems whose exact sum is the mixture, produced like a release.

Each stem takes real recorded sound wherever a recording exists:
- drums: a drummer on a recorded kit (`drumkit`: Hydrogen kits, Sonic Pi hits) for most
  clips, a recorded break or percussion loop on its own or under the kit, General MIDI drums
  (FluidR3) as a minority;
- vocals: the real-timbre singer (`singer`: recorded words and Flite/Festival voices re-sung
  with WORLD; doubles, harmonies, breaths, spoken lines), or the espeak-ng vocoder singer
  with GM "aahs" as a minority;
- bass and instruments: FluidR3 (its samples are recordings too), Freepats patches, and
  recorded phrases and loops (`sampler`);
- fx: risers, impacts, sweeps, GM effects (`fx`).
Levels: each stem is scaled to a target RMS (vocals −20, drums −21, bass −22, instruments
−21, fx −28 dBFS) with a random ±3.5 dB offset; then the mastering chain (`production`) on
the bus, applied so that the stems still sum to the mixture. A stem that comes out silent
makes the clip be drawn again from the next sub-seed.

`split="test"` draws only held-out kits, loops, speakers, voices and patches; `real=True`
keeps to recorded sources on every stem that has one (recorded kit or loop, a recorded
speaker singing, Freepats and recorded phrases): the real-sourced test set.
"""

from __future__ import annotations

import numpy as np

from . import compose, drumkit, eq, fluid, production, sampler, singer, voice
from .fx import fx_stem, pan, reverb

STEMS = ("vocals", "drums", "bass", "instruments", "fx")
TARGET_RMS_DB = {"vocals": -20.0, "drums": -21.0, "bass": -22.0, "instruments": -21.0, "fx": -28.0}
SILENT_PEAK_DB = -40.0
SR = fluid.SAMPLE_RATE


def _db(x: float) -> float:
    return 20 * np.log10(max(x, 1e-12))


def _espeak_vocals(rng: np.random.Generator, song: compose.Song, seconds: float) -> np.ndarray:
    female = rng.random() < 0.5
    low, high = (55, 72) if female else (48, 65)
    variant = str(rng.choice(voice.FEMALE if female else voice.MALE))
    language = str(rng.choice(voice.LANGUAGES))
    sung = compose.melody(rng, song, seconds, low, high)
    line = voice.vocal_line(rng, sung, seconds, f"{language}+{variant}")
    lead = pan(line, rng.uniform(-0.15, 0.15))
    if rng.random() < 0.3:  # backing "aahs" a third below, like MUSDB's backing vocals in the vocals stem
        choir = fluid.render([compose.backing_choir(rng, sung)], seconds)
        lead = lead + choir / (np.sqrt(np.mean(choir ** 2)) + 1e-9) * np.sqrt(np.mean(lead ** 2)) * 0.4
    return lead


def _vocals(rng, song, seconds, split, real) -> tuple[np.ndarray, str]:
    if real or rng.random() < 0.85:
        sung = singer.vocals(rng, song, seconds, split, real)
        if sung is not None:
            y, name = sung
            if rng.random() < 0.7:
                y = eq.apply(eq.microphone(rng), y)
            return reverb(rng, y, rng.uniform(0.08, 0.3)), name
    return reverb(rng, _espeak_vocals(rng, song, seconds), rng.uniform(0.1, 0.3)), "espeak"


def _drums(rng, song, seconds, split, real) -> tuple[np.ndarray, str]:
    kits = drumkit.kits(split)
    r = rng.random()
    if kits and (r < 0.65 or (real and r < 0.8)):
        kit = kits[rng.integers(len(kits))]
        y = drumkit.render(rng, song, seconds, kit)
        if rng.random() < 0.2:
            lp = drumkit.loop(rng, song, seconds, split)
            if lp is not None:
                y = y + lp * np.sqrt(np.mean(y ** 2) / (np.mean(lp ** 2) + 1e-12)) * rng.uniform(0.3, 0.7)
        return y, f"kit:{kit.name}"
    if real or r < 0.8:
        lp = drumkit.loop(rng, song, seconds, split)
        if lp is not None:
            return lp, "loop"
    return fluid.render([compose.drums(rng, song)], seconds), "gm"


def _bass(rng, song, seconds, split, real) -> tuple[np.ndarray, str]:
    part = compose.bass(rng, song)
    r = rng.random()
    if real or r < 0.4:
        patch = sampler.patch_for(rng, "bass", split)
        if patch:
            return reverb(rng, sampler.play_part(rng, part, patch, seconds), rng.uniform(0, 0.15)), "freepats"
    if r < 0.55 or real:
        ph = sampler.phrase(rng, "bass", seconds, split)
        if ph is not None:
            return ph, "phrase"
    return fluid.render([part], seconds), "gm"


def _instruments(rng, song, seconds, split, real) -> tuple[np.ndarray, list[str]]:
    parts = compose.instruments(rng, song)
    roles = sampler.roles_of(parts)
    out, names = np.zeros((2, int(round(seconds * SR)))), []
    gm = []
    for part, role in zip(parts, roles):
        patch = sampler.patch_for(rng, role, split) if (real or rng.random() < 0.45) else None
        if patch:
            y = reverb(rng, sampler.play_part(rng, part, patch, seconds), rng.uniform(0.1, 0.4))
            out += y / (np.sqrt(np.mean(y ** 2)) + 1e-9) * 10 ** (rng.uniform(-4, 2) / 20)
            names.append("freepats")
        else:
            gm.append(part)
    if gm:
        y = fluid.render(gm, seconds)
        out += y / (np.sqrt(np.mean(y ** 2)) + 1e-9) * 10 ** (rng.uniform(-4, 2) / 20)
        names.append("gm")
    if rng.random() < (0.5 if real else 0.25):
        ph = sampler.phrase(rng, "instruments", seconds, split)
        if ph is not None:
            out += ph / (np.sqrt(np.mean(ph ** 2)) + 1e-9) * 10 ** (rng.uniform(-6, 0) / 20)
            names.append("phrase")
    return out, names


def _draw(rng: np.random.Generator, seconds: float, split: str, real: bool) -> tuple[dict[str, np.ndarray], dict]:
    song = compose.new_song(rng, seconds)
    n = int(round(seconds * SR))
    drums, drum_src = _drums(rng, song, seconds, split, real)
    bass, bass_src = _bass(rng, song, seconds, split, real)
    inst, inst_src = _instruments(rng, song, seconds, split, real)
    vocals, singer_name = _vocals(rng, song, seconds, split, real)
    stems = {"vocals": vocals, "drums": drums, "bass": bass, "instruments": inst,
             "fx": fx_stem(rng, song.bar, seconds)}
    stems = {k: np.pad(np.asarray(stems[k], dtype=np.float64)[:, :n], ((0, 0), (0, max(0, n - stems[k].shape[1]))))
             for k in STEMS}
    info = {"tempo": round(song.tempo, 1), "drums": drum_src, "bass": bass_src, "instruments": inst_src,
            "singer": singer_name}
    return stems, info


def render_clip(seed: int, seconds: float, split: str = "train", real: bool = False
                ) -> tuple[dict[str, np.ndarray], dict]:
    """Five (2, n) float32 stems for `seed` and a description; deterministic."""
    for attempt in range(8):
        rng = np.random.default_rng([seed, attempt])
        stems, info = _draw(rng, seconds, split, real)
        if all(_db(np.abs(s).max()) > SILENT_PEAK_DB for s in stems.values()):
            break
    else:
        raise RuntimeError(f"seed {seed}: could not draw a clip without a silent stem")
    for name, s in stems.items():
        rms = np.sqrt(np.mean(s ** 2))
        s *= 10 ** ((TARGET_RMS_DB[name] + rng.uniform(-3.5, 3.5)) / 20) / rms
    mix_peak = np.abs(sum(stems.values())).max()
    gain = 10 ** (rng.uniform(-4, -1) / 20) / mix_peak
    stems = {k: v * gain for k, v in stems.items()}
    if rng.random() < 0.85:
        stems, info["production"] = production.master(rng, stems)
    # every stem and the mixture representable in 16-bit PCM
    peak = max(max(np.abs(s).max() for s in stems.values()), np.abs(sum(stems.values())).max())
    if peak > 0.99:
        stems = {k: v * (0.99 / peak) for k, v in stems.items()}
    info.update(split=split, real=real, attempt=attempt)
    return {k: v.astype(np.float32) for k, v in stems.items()}, info
