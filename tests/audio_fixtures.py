"""Real audio files for tests, written with soundfile (the decoder reads them back for real)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100


def tone(freq: float, seconds: float, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def music_like(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """(n, 2) stereo: a few tones panned apart plus noise bursts; deterministic."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    t = np.arange(n) / sr
    left = 0.2 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(n)
    right = 0.2 * np.sin(2 * np.pi * 330 * t + 1.0) + 0.05 * rng.standard_normal(n)
    return np.stack([left, right], axis=1).astype(np.float32)


FORMATS = {  # name: (soundfile format, subtype, sample rate it can carry)
    "wav": ("WAV", "PCM_16", SR),
    "flac": ("FLAC", "PCM_24", SR),
    "ogg": ("OGG", "VORBIS", SR),
    "opus": ("OGG", "OPUS", 48000),
    "mp3": ("MP3", "MPEG_LAYER_III", SR),
}


def encode(x: np.ndarray, sr: int, fmt: str) -> bytes:
    container, subtype, _ = FORMATS[fmt]
    buf = io.BytesIO()
    sf.write(buf, x, sr, format=container, subtype=subtype)
    return buf.getvalue()


def write(path: Path, x: np.ndarray, sr: int = SR, subtype: str = "FLOAT") -> Path:
    sf.write(path, x, sr, subtype=subtype)
    return path
