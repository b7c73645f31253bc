"""Sentences read by several speech synthesizers: Flite and Festival voices, and espeak-ng.

Flite's and Festival's voices are built from recordings of real speakers (diphone, unit
selection and HTS voices), so together with espeak-ng's formant voices they give far more
timbres than one engine: a network trained on one synthesizer learns that synthesizer.

Voices are split by speaker: the CMU Arctic speaker SLT (Flite `slt` and Festival's HTS
voice of the same speaker) and the Czech child voice `krb` are never rendered for training.
Packages: flite, festival + festvox-* voices, espeak-ng.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from . import text, voice
from .fluid import ToolMissing

SR = 44100


@dataclass(frozen=True)
class Voice:
    engine: str  # flite | festival | espeak
    name: str
    language: str
    encoding: str = "utf-8"

    @property
    def speaker(self) -> str:
        return f"{self.engine}:{self.name}"


FLITE = [Voice("flite", v, "en") for v in ("kal", "kal16", "awb", "awb_time", "rms", "slt")]
FESTIVAL = [
    Voice("festival", "kal_diphone", "en"), Voice("festival", "ked_diphone", "en"),
    Voice("festival", "cmu_us_slt_arctic_hts", "en"),
    Voice("festival", "czech_dita", "cs", "iso-8859-2"), Voice("festival", "czech_machac", "cs", "iso-8859-2"),
    Voice("festival", "czech_ph", "cs", "iso-8859-2"), Voice("festival", "czech_krb", "cs", "iso-8859-2"),
    Voice("festival", "lp_diphone", "it"), Voice("festival", "pc_diphone", "it"),
    Voice("festival", "msu_ru_nsh_clunits", "ru"),
    Voice("festival", "suo_fi_lj_diphone", "fi", "iso-8859-1"),
    Voice("festival", "hy_fi_mv_diphone", "fi", "iso-8859-1"),
    Voice("festival", "upc_ca_ona_hts", "es"),
]
ESPEAK = [Voice("espeak", f"{lang}+{v}", lang) for lang in voice.LANGUAGES for v in voice.MALE + voice.FEMALE]
HELD_OUT = {"flite:slt", "festival:cmu_us_slt_arctic_hts", "festival:czech_krb"}
# espeak-ng variants m6 and f4 are held out in every language
HELD_OUT_ESPEAK = ("+m6", "+f4")


def is_held_out(v: Voice) -> bool:
    return v.speaker in HELD_OUT or (v.engine == "espeak" and v.name.endswith(HELD_OUT_ESPEAK))


def _festival_dir(name: str) -> bool:
    return any(Path("/usr/share/festival/voices").glob(f"*/{name}"))


def voices(split: str) -> list[Voice]:
    """The installed voices of one side of the split."""
    out = []
    if shutil.which("flite"):
        out += FLITE
    if shutil.which("text2wave"):
        out += [v for v in FESTIVAL if _festival_dir(v.name)]
    if shutil.which("espeak-ng"):
        out += ESPEAK
    return [v for v in out if is_held_out(v) == (split == "test")]


def check() -> None:
    missing = [t for t, pkg in (("flite", "flite"), ("text2wave", "festival"), ("espeak-ng", "espeak-ng"))
               if not shutil.which(t)]
    if missing:
        raise ToolMissing(f"{', '.join(missing)} not installed: apt-get install flite festival espeak-ng "
                          "festvox-kallpc16k festvox-us-slt-hts (and the other festvox-* voices)")


def _decode(data: bytes) -> np.ndarray:
    x, sr = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    x = x.mean(axis=1)
    g = gcd(SR, sr)
    return resample_poly(x, SR // g, sr // g)


def say(v: Voice, words: str, rate: float = 1.0, pitch: int = 50) -> np.ndarray:
    """`words` read by voice `v`: mono float64 at 44.1 kHz (the engine's own band limit)."""
    if v.engine == "espeak":
        return voice.to_output_rate(voice.espeak(words, v.name, int(160 * rate), pitch))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.wav"
        if v.engine == "flite":
            cmd = ["flite", "-voice", v.name, "--setf", f"duration_stretch={1 / rate:.3f}", "-t", words, "-o", str(out)]
        else:
            src = Path(tmp) / "in.txt"
            src.write_bytes(words.encode(v.encoding, errors="ignore"))
            cmd = ["text2wave", "-eval", f"(voice_{v.name})", "-eval",
                   f"(Parameter.set 'Duration_Stretch {1 / rate:.3f})", str(src), "-o", str(out)]
        subprocess.run(cmd, capture_output=True, check=True, timeout=60)
        return _decode(out.read_bytes())


def sentence_for(rng: np.random.Generator, v: Voice) -> str:
    return text.sentence(rng, v.language) or voice.sentence(rng)


def read_aloud(rng: np.random.Generator, v: Voice, seconds: float) -> np.ndarray:
    """Sentences by one voice with natural pauses, filling about `seconds`; mono 44.1 kHz."""
    n = int(round(seconds * SR))
    line = np.zeros(n)
    t = int(rng.uniform(0.05, 0.5) * SR)
    rate, pitch = float(rng.uniform(0.85, 1.2)), int(rng.integers(35, 65))
    tries = 0
    while t < n - int(0.3 * SR) and tries < 12:
        tries += 1
        try:
            y = voice.trim(say(v, sentence_for(rng, v), rate, pitch), 1e-3)
        except (subprocess.SubprocessError, RuntimeError, sf.LibsndfileError):
            continue
        if y.size < 0.2 * SR:
            continue
        y = y[: n - t]
        line[t:t + y.size] += y / (np.sqrt(np.mean(y ** 2)) + 1e-9) * 0.05
        t += y.size + int(rng.uniform(0.2, 0.8) * SR)
    return line
