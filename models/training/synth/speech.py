"""Speech + noise clips for the `speech` (clean/enhance) model; mixture = speech + noise exactly.

Speech: espeak-ng sentences in several languages and voice variants, mono (a microphone),
stored as identical channels. Noise: coloured noise (1/f^a), babble of 3–7 other talkers,
music beds from the music generator (vocals included 30 % of the time) and GM ambience
effects. Clean level −30…−20 dBFS RMS; SNR uniform in −5…15 dB over the whole clip, or fixed
(the test set uses 0 dB); both are scaled down together if the peak would exceed −0.5 dBFS.
"""

from __future__ import annotations

import numpy as np

from . import fluid, music, voice

STEMS = ("speech", "noise")
SR = fluid.SAMPLE_RATE


def coloured_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    alpha = rng.uniform(0, 2.2)  # 0 white, 1 pink, 2 brown
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    spec[1:] /= f[1:] ** (alpha / 2)
    spec[0] = 0
    return np.fft.irfft(spec, n)


def babble(rng: np.random.Generator, seconds: float) -> np.ndarray:
    talkers = int(rng.integers(3, 8))
    out = np.zeros(int(round(seconds * SR)))
    for _ in range(talkers):
        v = f"{rng.choice(voice.LANGUAGES)}+{rng.choice(voice.MALE + voice.FEMALE)}"
        y = voice.speech_line(rng, seconds, v)
        out[: len(y)] += y / (np.sqrt(np.mean(y ** 2)) + 1e-9) * 10 ** (rng.uniform(-4, 4) / 20)
    return out


def music_bed(rng: np.random.Generator, seconds: float) -> np.ndarray:
    stems = music.render_clip(int(rng.integers(2**31)), seconds)
    keep = [k for k in music.STEMS if k != "vocals" or rng.random() < 0.3]
    return sum(stems[k] for k in keep).mean(axis=0)


def ambience(rng: np.random.Generator, seconds: float) -> np.ndarray:
    notes = [fluid.Note(0.0, seconds, int(rng.integers(48, 72)), int(rng.integers(70, 120)))]
    return fluid.render([fluid.Part(int(rng.integers(121, 127)), notes)], seconds, effects=False).mean(axis=0)


def render_clip(seed: int, seconds: float, snr_db: float | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    talker = f"{rng.choice(voice.LANGUAGES)}+{rng.choice(voice.MALE + voice.FEMALE)}"
    speech = voice.speech_line(rng, seconds, talker)[:n]
    speech = np.pad(speech, (0, n - len(speech)))
    kind = rng.choice(["coloured", "babble", "music", "ambience"], p=[0.3, 0.25, 0.3, 0.15])
    noise = {"coloured": lambda: coloured_noise(rng, n), "babble": lambda: babble(rng, seconds),
             "music": lambda: music_bed(rng, seconds), "ambience": lambda: ambience(rng, seconds)}[kind]()[:n]
    noise = np.pad(noise, (0, n - len(noise)))
    if np.sqrt(np.mean(noise ** 2)) < 1e-6:  # a silent ambience preset: fall back to coloured noise
        noise = coloured_noise(rng, n)
    snr = rng.uniform(-5, 15) if snr_db is None else snr_db
    speech *= 10 ** (rng.uniform(-30, -20) / 20) / np.sqrt(np.mean(speech ** 2))
    noise *= np.sqrt(np.mean(speech ** 2)) / np.sqrt(np.mean(noise ** 2)) * 10 ** (-snr / 20)
    peak = max(np.abs(speech + noise).max(), np.abs(speech).max(), np.abs(noise).max())
    if peak > 10 ** (-0.5 / 20):
        scale = 10 ** (-0.5 / 20) / peak
        speech, noise = speech * scale, noise * scale
    return {"speech": np.stack([speech, speech]).astype(np.float32),
            "noise": np.stack([noise, noise]).astype(np.float32)}
