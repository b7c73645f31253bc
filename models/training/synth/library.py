"""Real recorded material from Debian's sample packages, and the rule that splits it.

Every sound source that reads recorded files goes through here: `load` decodes and resamples
a file once per process, and `held_out` decides, from the file's (or kit's, or speaker's)
name alone, whether it belongs to the test side. Training renders never touch a held-out
name, so the real-sourced test sets measure generalization to recordings the network has
never heard, not recall.

Packages (`apt-get install ...`; each source says which it needs and fails naming it):
sonic-pi-samples, hydrogen-drumkits, hydrogen-data, lmms-common, ktuberling-data.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from math import gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from .fluid import ToolMissing

SR = 44100
ROOTS = {
    "sonic-pi-samples": Path("/usr/share/sonic-pi/samples"),
    "hydrogen-drumkits": Path("/usr/share/hydrogen/data/drumkits"),
    "lmms-common": Path("/usr/share/lmms/samples"),
    "ktuberling-data": Path("/usr/share/ktuberling/sounds"),
}
AUDIO = {".wav", ".flac", ".ogg", ".opus"}
HELD_OUT_FRACTION = 0.2


def root(package: str) -> Path:
    path = ROOTS[package]
    if not path.is_dir():
        raise ToolMissing(f"{path} is missing: apt-get install {package}")
    return path


def available(package: str) -> bool:
    return ROOTS[package].is_dir()


def held_out(name: str, fraction: float = HELD_OUT_FRACTION) -> bool:
    """True for the test side. A stable hash of the name, so the split never depends on
    which files happen to be installed or in what order they are listed."""
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16)
    return h / 2**32 < fraction


def split_of(name: str, fraction: float = HELD_OUT_FRACTION) -> str:
    return "test" if held_out(name, fraction) else "train"


def files(package: str, pattern: str = "*", split: str | None = None) -> list[Path]:
    """Audio files of a package matching a glob (relative to its root), sorted; with `split`,
    only those of that side (by the file's path relative to the root)."""
    base = root(package)
    out = sorted(p for p in base.glob(pattern) if p.suffix.lower() in AUDIO and p.is_file() and readable(str(p)))
    if split:
        out = [p for p in out if split_of(str(p.relative_to(base))) == split]
    return out


@lru_cache(maxsize=None)
def readable(path: str) -> bool:
    """A handful of the packages' files are named .ogg but hold a malformed WAV that
    libsndfile refuses; they are left out rather than failing a render."""
    try:
        sf.info(path)
        return True
    except (sf.LibsndfileError, RuntimeError):
        return False


@lru_cache(maxsize=2048)
def _load(path: str) -> np.ndarray:
    x, sr = sf.read(path, dtype="float64", always_2d=True)
    x = x.T
    if x.shape[0] > 2:
        x = x[:2]
    if sr != SR:
        g = gcd(SR, sr)
        x = resample_poly(x, SR // g, sr // g, axis=-1)
    x.setflags(write=False)
    return x


def load(path: Path | str, mono: bool = False) -> np.ndarray:
    """A recorded file as float64 at 44.1 kHz: (channels, n), or (n,) with `mono`. Cached per
    process and read-only: copy before changing it."""
    x = _load(str(path))
    return x.mean(axis=0) if mono else x


def stereo(x: np.ndarray) -> np.ndarray:
    return np.stack([x, x]) if x.ndim == 1 else (np.concatenate([x, x]) if x.shape[0] == 1 else x)


def trim(x: np.ndarray, rel_db: float = -45.0) -> np.ndarray:
    """Cut leading and trailing parts quieter than `rel_db` below the peak (any channel)."""
    env = np.abs(x).max(axis=0) if x.ndim == 2 else np.abs(x)
    idx = np.nonzero(env > env.max() * 10 ** (rel_db / 20))[0] if env.size and env.max() > 0 else []
    if len(idx) == 0:
        return x[..., :0]
    return x[..., idx[0]:idx[-1] + 1]


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x)))) if x.size else 0.0
