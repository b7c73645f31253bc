"""SeparationEngine: one loaded model, its device policy, and the whole file-to-stems path.

    decode (streamed) → 18 s chunks, 1.75 s Hann crossfades → model → overlap-add
    → stem post-conditioning → optional normalization → encoded stem files

The engine knows nothing of Ray, HTTP or databases; the CLI, the service and the benchmarks
all call `SeparationEngine.separate`.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from . import audio
from .apply import ChunkPlan, Progress, apply_chunked
from .bslocoformer import BSLocoformer
from .checkpoint import CheckpointError, build_model, check_matches, default_checkpoint, load_checkpoint
from .conditioning import StreamFilter, conditioner
from .config import SAMPLE_RATE, load_config
from .device import DeviceChoice, DeviceRequest, ExecutionMode, choose_device, is_device_fault
from .stems import Format, Normalize, StemSink, check_encoding

log = logging.getLogger(__name__)


def _heap_trimmer() -> Callable[[], None]:
    """glibc keeps freed heap pages (and fragments them across a chunk's many large
    temporaries), so peak RSS would creep up over a long job; returning them after each
    chunk keeps the peak to one chunk's working set. A no-op where there is no glibc."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


_trim_heap = _heap_trimmer()

DEFAULT_CHUNK_S, DEFAULT_OVERLAP_S = 18.0, 1.75
ARRAY_BLOCK = 1 << 18

Input = audio.Source | np.ndarray
# Extra per-stem filters and normalization a caller may add (the service's enhance chain).
ExtraFilters = Callable[[str], list[StreamFilter]]


class EngineError(RuntimeError):
    """The engine cannot be built as asked (no checkpoint, mismatched checkpoint, …)."""


@dataclass
class SeparationResult:
    stems: dict[str, Path]
    device: str
    fallback: bool
    fallback_reason: str | None
    metadata: dict = field(default_factory=dict)


def _array_blocks(x: np.ndarray) -> Iterator[np.ndarray]:
    for start in range(0, x.shape[1], ARRAY_BLOCK):
        yield x[:, start:start + ARRAY_BLOCK]


class SeparationEngine:
    def __init__(self, variant: str, checkpoint: str | Path | None = None, *,
                 mode: ExecutionMode = "cpu_only", device: DeviceRequest = "auto",
                 size: str = "cpu", random_weights: bool = False, threads: int | None = None,
                 chunk_seconds: float = DEFAULT_CHUNK_S, overlap_seconds: float = DEFAULT_OVERLAP_S,
                 config_overrides: dict | None = None):
        self.mode = mode
        self.choice: DeviceChoice = choose_device(mode, device)
        if threads:
            torch.set_num_threads(threads)
        self.plan = ChunkPlan.from_seconds(chunk_seconds, overlap_seconds, SAMPLE_RATE)
        expected = load_config(variant, size, **(config_overrides or {}))
        self.random_weights = random_weights
        if random_weights:
            torch.manual_seed(0)  # reproducible random weights for tests and benchmarks
            self.model = BSLocoformer(expected)
            self.weights_sha256 = "random"
            log.warning("!!! %s/%s engine uses RANDOM WEIGHTS: its output is not a separation !!!",
                        variant, size)
        else:
            path = checkpoint or default_checkpoint(variant, size)
            if path is None:
                raise EngineError(f"no trained checkpoint for {variant}/{size}; pass a checkpoint, "
                                  f"or --random-weights for tests and benchmarks")
            try:
                ckpt = load_checkpoint(path)
                check_matches(ckpt, expected)
                self.model = build_model(ckpt)
            except CheckpointError as e:
                raise EngineError(str(e)) from e
            self.weights_sha256 = ckpt.sha256
        self.config = self.model.cfg
        self.model.eval().to(self.choice.device)
        self._device = self.choice.device  # where the current job runs

    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.stems

    def _forward(self, chunk: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.array(chunk, dtype=np.float32, copy=True))[None].to(self._device)
        with torch.inference_mode():
            return self.model(x)[0].float().cpu().numpy()

    def separate(self, source: Input, out_dir: str | Path, *, fmt: Format = "wav", bitrate: int | None = None,
                 normalize: Normalize | None = None, progress: Progress | None = None,
                 max_seconds: float = audio.MAX_SECONDS, extra_filters: ExtraFilters | None = None,
                 stems_normalize: dict[str, Normalize] | None = None) -> SeparationResult:
        """Separate `source` (a path, bytes, or a (2, n) float32 44.1 kHz array) into `out_dir`."""
        bitrate = check_encoding(fmt, bitrate)  # before any work: a bad option is the caller's
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        info = None
        if isinstance(source, np.ndarray):
            if source.ndim != 2 or source.shape[0] != 2 or source.shape[1] == 0:
                raise audio.AudioError("bad_array", "expected a non-empty (2, n) array")
            expected = source.shape[1]
            blocks = lambda: _array_blocks(source)  # noqa: E731
        else:
            info = audio.probe(source, max_seconds)
            expected = info.output_frames
            blocks = lambda: audio.iter_decode(source, max_seconds)  # noqa: E731
        job = dict(out_dir=out_dir, fmt=fmt, bitrate=bitrate, normalize=normalize, progress=progress,
                   extra_filters=extra_filters, stems_normalize=stems_normalize)
        started = time.perf_counter()
        ran = self.choice
        self._device = ran.device
        try:
            timings = self._run(blocks(), expected, **job)
        except Exception as e:
            if ran.device.type == "cpu" or not is_device_fault(e):
                raise
            log.exception("device fault on %s; retrying the job once on CPU", ran.device)
            ran = DeviceChoice(torch.device("cpu"), True, f"{type(e).__name__} during the job: {e}")
            self._device = ran.device
            self.model.to("cpu")
            timings = self._run(blocks(), expected, **job)
            self._restore_device()
        total = time.perf_counter() - started
        reports, frames = timings.pop("reports"), timings.pop("frames")
        duration = frames / SAMPLE_RATE
        meta = {
            "model": self.config.name, "variant": self.config.variant, "size": self.config.size,
            "stems": list(self.stems), "weights_sha256": self.weights_sha256,
            "random_weights": self.random_weights,
            "device": str(ran.device), "device_type": ran.device.type,
            "device_name": ran.name, "fallback": ran.fallback,
            "fallback_reason": ran.reason, "execution_mode": self.mode,
            "torch_threads": torch.get_num_threads(),
            "sample_rate": SAMPLE_RATE, "chunk_samples": self.plan.chunk,
            "overlap_samples": self.plan.overlap, "chunks": self.plan.count(frames),
            "input": {"duration_s": round(duration, 3), "frames": frames,
                      **({"format": info.format, "subtype": info.subtype, "sample_rate": info.sample_rate,
                          "channels": info.channels} if info else {"format": "array"})},
            "output": {"format": fmt, "bitrate_kbps": bitrate, "normalize": normalize, "stems": [r.to_dict() for r in reports]},
            "timings": {**{k: round(v, 4) for k, v in timings.items()}, "total_s": round(total, 4),
                        "seconds_per_audio_minute": round(total / duration * 60, 3) if duration else None},
        }
        return SeparationResult({r.name: r.path for r in reports}, str(ran.device), ran.fallback, ran.reason, meta)

    def _restore_device(self) -> None:
        """After a fault, the next job tries the accelerator again (an OOM is usually one long
        job's); if the device is gone for good, the engine stays on the CPU and says why."""
        try:
            self.model.to(self.choice.device)
        except Exception as e:
            log.exception("%s unusable after a fault; staying on CPU", self.choice.device)
            self.model.to("cpu")
            self.choice = DeviceChoice(torch.device("cpu"), True, f"{self.choice.device} failed: {type(e).__name__}: {e}")

    def _run(self, blocks: Iterable[np.ndarray], expected: int, *, out_dir: Path, fmt: Format,
             bitrate: int | None, normalize: Normalize | None, progress: Progress | None, extra_filters: ExtraFilters | None,
             stems_normalize: dict[str, Normalize] | None) -> dict:
        sinks = []
        for stem in self.stems:
            filters = [f for f in [conditioner(stem, SAMPLE_RATE)] if f]
            filters += extra_filters(stem) if extra_filters else []
            sinks.append(StemSink(stem, out_dir / f"{stem}.{fmt}", fmt, SAMPLE_RATE, filters,
                                  (stems_normalize or {}).get(stem, normalize), bitrate))
        model_s = 0.0

        def model(chunk: np.ndarray) -> np.ndarray:
            nonlocal model_s
            t = time.perf_counter()
            y = self._forward(chunk)
            model_s += time.perf_counter() - t
            return y

        frames = 0
        try:
            for segment in apply_chunked(model, blocks, self.plan, expected, progress):
                frames += segment.shape[-1]
                for sink, stem_audio in zip(sinks, segment):
                    sink.write(stem_audio)
                _trim_heap()
            t = time.perf_counter()
            reports = [sink.close() for sink in sinks]
            finish_s = time.perf_counter() - t
        except BaseException:
            for sink in sinks:
                sink.abort()
            raise
        return {"model_s": model_s, "finish_s": finish_s, "reports": reports, "frames": frames}
