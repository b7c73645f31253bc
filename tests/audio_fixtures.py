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


def encode_av(x: np.ndarray, sr: int, container: str, codec: str | None, *, video: bool = False,
              bitrate: int | None = None, path: Path | None = None, options: dict | None = None) -> bytes:
    """(n, channels) float32 encoded with FFmpeg through PyAV: M4A (container 'ipod'), WMA
    ('asf'), a video with a soundtrack (`video=True`) or without one (`codec=None`). Written
    to `path` when given (MP4's faststart rewrites the file), else returned as bytes."""
    import av

    target = str(path) if path else io.BytesIO()
    layout = {1: "mono", 2: "stereo", 6: "5.1"}[x.shape[1]]
    with av.open(target, "w", format=container, options=options or {}) as out:
        vs = out.add_stream("mpeg4", rate=10) if video else None  # every stream before the first packet
        st = out.add_stream(codec, rate=sr, layout=layout) if codec else None
        if vs is not None:
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
            for _ in range(max(1, round(10 * x.shape[0] / sr))):
                frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="rgb24")
                for packet in vs.encode(frame):
                    out.mux(packet)
            for packet in vs.encode():
                out.mux(packet)
        if st is not None:
            if bitrate:
                st.bit_rate = bitrate
            for start in range(0, x.shape[0], 4096):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[start:start + 4096].T, np.float32),
                                                   format="fltp", layout=layout)
                frame.sample_rate, frame.pts = sr, start
                for packet in st.encode(frame):
                    out.mux(packet)
            for packet in st.encode():
                out.mux(packet)
    return path.read_bytes() if path else target.getvalue()
