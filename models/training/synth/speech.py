"""Speech + noise clips for the `speech` (clean/enhance) model; mixture = speech + noise exactly.

Speech is one talker: recorded telephone prompts (`prompts`: 25 % of training clips, never
in a test clip; such a clip is a 16 kHz recording as a whole, noise included), real
recorded words (`words`: 75 % of the other training clips; 40 % of synthetic test clips),
half of either replayed faster or slower, or sentences read by a Flite, Festival or
espeak-ng voice (`tts`), through a random microphone colouring and,
for a third of the clips, a room. Noise is a scene of real recordings and procedural noise
(`noises`), often in a room of its own. Then, as real recordings are: a random level, an SNR
from −5 to 20 dB with some near-clean and some clean clips (so the model learns to leave
clean speech alone), and for part of the clips the band limit of an 8, 11 or 16 kHz
original, applied to both parts alike. Channels are identical (one microphone). A `real`
clip keeps its recordings as they are: no colouring, room or band limit of ours.

`split` chooses the side of every held-out rule: test clips use only held-out speakers,
voices and noise recordings. `real` restricts a clip to real recordings on both sides
(recorded words over recorded noise): the real-voice test set.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.signal import resample_poly

from . import eq, library, noises, prompts, rooms, tts, words

STEMS = ("speech", "noise")
SR = library.SR
SNR_BANDS = (-5.0, 0.0, 5.0, 10.0, 15.0)  # test clip i is at SNR_BANDS[i % 5]
REAL_NOISE = ("events", "loops", "ambience", "babble")


# Share of clips voiced by real recorded words. Training leans on them: at 40 % the model learnt
# synthesizer timbre as "speech" and distorted real voices (benchmarks/speech_quality.py,
# real-voice-white at +10 dB: −0.56 dB SI-SDR improvement, DFN3 +5.88; README, speech-cpu).
# The synthetic test set keeps 40 % so that it renders as before and figures stay comparable.
REAL_WORDS_SHARE = {"train": 0.75, "test": 0.4}
# Share of training clips voiced by recorded telephone prompts (`prompts`: 2.1 h of four real
# speakers recorded at 16 kHz), drawn before the rule above; test clips never use them.
PROMPTS_SHARE = 0.25
VARISPEED = (0.88, 1.12)  # training words replayed faster or slower: the same voice, another speaker's pitch and formants


def varispeed(x: np.ndarray, factor: float) -> np.ndarray:
    """`x` played `factor` times as fast (pitch and formants up by the same ratio), as tape would."""
    up = 100
    down = int(round(up * factor))
    return resample_poly(x, up, down) if down != up else x


def _replayed(rng: np.random.Generator, seconds: float, name: str,
              line_of: Callable[[float], np.ndarray]) -> tuple[np.ndarray, str]:
    """A training line, half the time replayed at another speed and named NAME@FACTOR."""
    if rng.random() < 0.5:
        factor = float(rng.uniform(*VARISPEED))
        return varispeed(line_of(seconds * factor), factor), f"{name}@{factor:.2f}"
    return line_of(seconds), name


def talker(rng: np.random.Generator, seconds: float, split: str, real: bool = False) -> tuple[np.ndarray, str]:
    """Mono speech filling about `seconds` and the name of its speaker."""
    if split == "train" and not real and rng.random() < PROMPTS_SHARE and prompts.available():
        names = prompts.speakers()
        name = names[rng.integers(len(names))]
        return _replayed(rng, seconds, f"prompts:{name}", lambda s: prompts.phrase_line(rng, s, name))
    langs = words.languages(split) if library.available(words.PACKAGE) else []
    if langs and (real or rng.random() < REAL_WORDS_SHARE[split]):
        lang = langs[rng.integers(len(langs))]
        if split == "train":
            return _replayed(rng, seconds, f"words:{lang}", lambda s: words.phrase_line(rng, s, lang))
        return words.phrase_line(rng, seconds, lang), f"words:{lang}"
    pool = tts.voices(split)
    engine = rng.choice(["flite", "festival", "espeak"], p=[0.25, 0.45, 0.3])
    chosen = [v for v in pool if v.engine == engine] or pool
    v = chosen[rng.integers(len(chosen))]
    return tts.read_aloud(rng, v, seconds), v.speaker


def _snr(rng: np.random.Generator) -> float | None:
    """Training SNR: None (no noise at all) 5 %, near-clean 30–45 dB 7 %, else −5…20 dB."""
    r = rng.random()
    if r < 0.05:
        return None
    if r < 0.12:
        return float(rng.uniform(30, 45))
    return float(rng.uniform(-5, 20))


def render_clip(seed: int, seconds: float, snr_db: float | None = None, split: str = "train",
                real: bool = False) -> tuple[dict[str, np.ndarray], dict]:
    rng = np.random.default_rng(seed)
    n = int(round(seconds * SR))
    speech, speaker = talker(rng, seconds, split, real)
    speech = np.pad(speech[:n], (0, max(0, n - speech.size)))
    # a real recording keeps its own microphone, room and bandwidth
    if not real and rng.random() < 0.7:
        speech = eq.apply(eq.microphone(rng), speech)
    room = not real and rng.random() < 0.33
    if room:
        speech = rooms.apply(speech, rooms.impulse_response(rng, drr_db=float(rng.uniform(2, 15))))

    snr = _snr(rng) if snr_db is None and split == "train" else snr_db
    kinds = REAL_NOISE if real else noises.KINDS
    weights = (0.3, 0.2, 0.2, 0.3) if real else noises.WEIGHTS
    noise, layers = noises.scene(rng, n, split, kinds, weights)
    if not real and rng.random() < 0.5:
        noise = rooms.apply(noise, rooms.impulse_response(rng, drr_db=float(rng.uniform(-5, 8))))

    cutoff = None if real else eq.band_limit(rng)
    if cutoff:
        lp = eq.lowpass(cutoff)
        speech, noise = eq.apply(lp, speech), eq.apply(lp, noise)
    if speaker.startswith("prompts:"):  # a 16 kHz recording: the whole clip is one, noise included
        speech, noise = prompts.at_source_rate(speech), prompts.at_source_rate(noise)
        cutoff = min(cutoff or prompts.EDGE_HZ, prompts.EDGE_HZ)

    speech *= 10 ** (rng.uniform(-36, -18) / 20) / (library.rms(speech) + 1e-12)
    if snr is None:
        noise = np.zeros(n)
    else:
        noise *= library.rms(speech) / (library.rms(noise) + 1e-12) * 10 ** (-snr / 20)
    peak = max(np.abs(speech + noise).max(), np.abs(speech).max(), np.abs(noise).max())
    if peak > 10 ** (-0.5 / 20):
        scale = 10 ** (-0.5 / 20) / peak
        speech, noise = speech * scale, noise * scale
    info = {"speaker": speaker, "noise": layers, "snr_db": None if snr is None else round(snr, 2),
            "room": room, "band_limit_hz": cutoff, "split": split, "real": real}
    return ({"speech": np.stack([speech, speech]).astype(np.float32),
             "noise": np.stack([noise, noise]).astype(np.float32)}, info)
