"""Recorded telephone prompts (Asterisk's core sounds): hours of real read speech, band-limited.

`asterisk-core-sounds-{en,es,fr,it,ru}-g722` hold 2,781 prompts ("Please enter your
mailbox number", digits, letters, dates) recorded by four professional speakers (Allison
Smith in English and Spanish, June Wallack in French, Carlo Flora in Italian, a Russian
female voice), CC-BY-SA-3.0: 2.1 hours of real voice (file lengths), four times what the recorded
words of `words` hold. They are G.722, so 16 kHz wideband: nothing above 8 kHz. A clip voiced
by them is therefore made a 16 kHz recording as a whole (`at_source_rate`, noise included),
or the model would learn that everything above 8 kHz is noise and dull full-band voices.

Only the training side uses them: the test sets keep their held-out recorded speakers
(`words.TEST_LANGUAGES`), so that they measure new voices, and render as before.
"""

from __future__ import annotations

import re
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import butter, resample_poly, sosfilt

from . import library, words
from .fluid import ToolMissing

ROOT = Path("/usr/share/asterisk/sounds")
PACKAGES = "asterisk-core-sounds-en-g722 asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722 " \
           "asterisk-core-sounds-it-g722 asterisk-core-sounds-ru-g722"
# one folder per speaker and language (en_US_f_Allison); the short names beside them are links
SPEAKER_FOLDER = re.compile(r"^[a-z]{2}_[A-Z]{2}_[fm]_\w+$")
SOURCE_RATE = 16000
SR = library.SR
EDGE_HZ = 7600.0  # where the prompts' own spectrum ends
CODEC_EDGE = butter(16, EDGE_HZ, fs=SR, output="sos")
MIN_BYTES = 800  # 0.1 s at G.722's 64 kbit/s
_UP, _DOWN = SR // gcd(SR, SOURCE_RATE), SOURCE_RATE // gcd(SR, SOURCE_RATE)  # 441, 160


def available() -> bool:
    return bool(speakers())


@lru_cache(maxsize=1)
def _pools() -> dict[str, tuple[str, ...]]:
    if not ROOT.is_dir():
        return {}
    out = {}
    for d in sorted(p for p in ROOT.iterdir() if p.is_dir() and not p.is_symlink() and SPEAKER_FOLDER.match(p.name)):
        # the Russian set ships one empty file (is.g722); a tenth of a second is the least a word needs
        files = tuple(str(f) for f in sorted(d.rglob("*.g722"))
                      if f.parent.name != "silence" and f.stat().st_size >= MIN_BYTES)
        if files:
            out[d.name] = files
    return out


def speakers() -> list[str]:
    return list(_pools())


@lru_cache(maxsize=4096)
def _decode(path: str) -> np.ndarray:
    """A prompt as decoded: int16 mono at 16 kHz, read-only. Cached as such, since a render
    reaches every prompt: the whole pool is 0.23 GiB so, 2.5 GiB as float64 at 44.1 kHz (per
    worker process). Raw G.722 has no header that libsndfile reads; PyAV's FFmpeg (the
    service's decoder already) has the codec."""
    import av

    with av.open(path, format="g722") as container:
        stream = container.streams.audio[0]
        frames = list(container.decode(stream))
    if not frames or frames[0].format.name != "s16":
        raise ValueError(f"{path}: expected 16-bit G.722 audio")
    x = np.concatenate([f.to_ndarray().reshape(-1) for f in frames])
    x.setflags(write=False)
    return x


def prompt(path: str) -> np.ndarray:
    """One prompt at 44.1 kHz, trimmed to its voiced extent with short fades, at unit RMS."""
    return words.utterance(resample_poly(_decode(path).astype(np.float64) / 32768, _UP, _DOWN))


def phrase_line(rng: np.random.Generator, seconds: float, speaker: str) -> np.ndarray:
    """Prompts of one speaker strung together with natural pauses, filling about `seconds`
    (mono 44.1 kHz, at the level of `words.phrase_line`)."""
    pools = _pools()
    if speaker not in pools:
        raise ToolMissing(f"no prompts of {speaker} under {ROOT}: apt-get install {PACKAGES}")
    return words.string_together(rng, seconds, list(pools[speaker]), prompt)


def at_source_rate(x: np.ndarray) -> np.ndarray:
    """`x` as if it came through the prompts' G.722 channel: down to 16 kHz and up again, then a
    steep edge at 7.6 kHz, where the prompts' own spectrum ends (resampling alone leaves white
    noise at −23 dB in 8–8.5 kHz, where the prompts hold under −42 dB); same length."""
    y = resample_poly(resample_poly(x, _DOWN, _UP, axis=-1), _UP, _DOWN, axis=-1)
    y = np.pad(y[..., : x.shape[-1]], [(0, 0)] * (x.ndim - 1) + [(0, max(0, x.shape[-1] - y.shape[-1]))])
    return sosfilt(CODEC_EDGE, y, axis=-1)
