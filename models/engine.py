"""SeparationEngine: one loaded model, its device policy, and the whole file-to-stems path.

    decode (streamed) → 18 s chunks, 1.75 s Hann crossfades → model → overlap-add
    → stem post-conditioning → optional normalization → encoded stem files

The engine knows nothing of Ray, HTTP or databases; the CLI, the service and the benchmarks
all call `SeparationEngine.separate`.

On a GPU the engine runs several equal-length chunks per forward (`batch_size`; by default as
many as a fraction of the free GPU memory holds, measured once per model, at most
`max_batch`), under bf16 autocast (the model keeps its mask head, masking and iSTFT in fp32),
and overlaps the next chunks' decoding and the finished segments' conditioning and encoding
with the GPU's work on two helper threads. An out-of-memory on a batch halves the batch and
retries; only a single chunk that does not fit falls back to the CPU. On the CPU the default
is one chunk per forward, fp32, no helper threads: the CPU's cores are the model's.

`size="auto"` picks the network by device (`checkpoint.size_for_device`): the `gpu` size on a
GPU, the `cpu` size on a CPU, including a job that falls back to the CPU after a device fault.
"""

from __future__ import annotations

import ctypes
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, TypeVar

import numpy as np
import torch

from . import audio
from .apply import ChunkPlan, Progress, apply_batched, chunks
from .bslocoformer import BSLocoformer
from .checkpoint import (CheckpointError, build_model, check_matches, default_checkpoint, load_checkpoint,
                         size_for_device)
from .conditioning import StreamFilter, conditioner
from .config import SAMPLE_RATE, load_config
from .device import DeviceChoice, DeviceRequest, ExecutionMode, choose_device, is_device_fault
from .shifts import check_shifts, default_shifts, shift_averaged
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
DEFAULT_MAX_BATCH = 8
# of the free GPU memory, what a batch's activations may take: the rest is left for the
# allocator's fragmentation and for anything else on the device
DEFAULT_GPU_MEMORY_FRACTION = 0.6

Precision = Literal["auto", "fp32", "bf16"]
T = TypeVar("T")

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


def batch_from_memory(free_bytes: int, chunk_bytes: int, fraction: float = DEFAULT_GPU_MEMORY_FRACTION,
                      max_batch: int = DEFAULT_MAX_BATCH) -> int:
    """How many chunks of `chunk_bytes` peak working memory fit in `fraction` of `free_bytes`,
    between 1 (a chunk that does not fit is the OOM retry's and the CPU fallback's business)
    and `max_batch` (which bounds the memory of a batch whatever the device has free)."""
    if chunk_bytes <= 0:
        return max(1, max_batch)
    return max(1, min(max_batch, int(free_bytes * fraction // chunk_bytes)))


@dataclass
class LoadedModel:
    model: BSLocoformer
    size: str
    checkpoint: str | None  # file name; None for random weights
    sha256: str
    note: str | None = None  # why this size is not the device's own
    chunk_bytes: int | None = None  # peak GPU working memory of one chunk, measured on first use


@dataclass
class BatchStats:
    size: int  # the job's current batch size (halved by each OOM)
    first: int = 0  # what the job started with
    largest: int = 0  # the largest forward actually run
    forwards: int = 0
    oom_retries: int = 0

    def to_dict(self) -> dict:
        return {"size": self.first, "largest": self.largest, "forwards": self.forwards,
                "oom_retries": self.oom_retries}


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """`items`, produced `depth` ahead on a thread (decoding overlaps the GPU's work).
    An error in the producer is raised here, in order; stopping early stops the producer."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop, end = threading.Event(), object()

    def put(entry: tuple) -> bool:
        # a consumer that stopped takes nothing more: never block on it
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.05)
                return True
            except queue.Full:
                pass
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((end, None))
        except BaseException as e:  # noqa: BLE001 — handed to the consumer, who raises it
            put((end, e))
        finally:
            close = getattr(items, "close", None)
            if close:
                close()  # a generator holding an open file closes it in its own thread

    worker = threading.Thread(target=produce, name="locoserve-decode", daemon=True)
    worker.start()
    try:
        while True:
            item, error = q.get()
            if item is end:
                if error is not None:
                    raise error
                return
            yield item
    finally:
        stop.set()
        worker.join()


class SegmentWriter:
    """Writes finished segments to the stems, inline or on a thread (encoding overlaps the
    next forward). A failed write is raised at the next `put` or at `close`; a writer that
    failed keeps draining its queue, so `put` never blocks on it."""

    def __init__(self, write: Callable[[np.ndarray], None], threaded: bool, depth: int = 2):
        self._write, self.error = write, None
        self.seconds = 0.0
        self._thread = None
        if threaded:
            self._q: queue.Queue = queue.Queue(maxsize=depth)
            self._discard = False
            self._thread = threading.Thread(target=self._loop, name="locoserve-encode", daemon=True)
            self._thread.start()

    def _timed(self, segment: np.ndarray) -> None:
        t = time.perf_counter()
        self._write(segment)
        self.seconds += time.perf_counter() - t

    def _loop(self) -> None:
        while (segment := self._q.get()) is not None:
            if self.error is None and not self._discard:
                try:
                    self._timed(segment)
                except BaseException as e:  # noqa: BLE001 — raised in the caller's thread
                    self.error = e

    def put(self, segment: np.ndarray) -> None:
        if self._thread is None:
            return self._timed(segment)
        if self.error is not None:
            raise self.error
        self._q.put(segment)

    def close(self, discard: bool = False) -> None:
        """Wait until everything put is written (or, `discard`, dropped); raise a write's error."""
        if self._thread is not None:
            self._discard = discard
            self._q.put(None)
            self._thread.join()
            self._thread = None
        if self.error is not None and not discard:
            raise self.error


class SeparationEngine:
    def __init__(self, variant: str, checkpoint: str | Path | None = None, *,
                 mode: ExecutionMode = "cpu_only", device: DeviceRequest = "auto",
                 size: str = "cpu", random_weights: bool = False, threads: int | None = None,
                 chunk_seconds: float = DEFAULT_CHUNK_S, overlap_seconds: float = DEFAULT_OVERLAP_S,
                 config_overrides: dict | None = None, batch_size: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, gpu_memory_fraction: float = DEFAULT_GPU_MEMORY_FRACTION,
                 precision: Precision = "auto", overlap_io: bool | None = None, shifts: int | None = None):
        """`size`: a size of configs/models.yaml, or "auto" for the device's own (see the module).
        `batch_size`: chunks per forward; None: 1 on a CPU, from free memory on a GPU (≤ `max_batch`).
        `precision`: "auto" is bf16 autocast on a GPU that supports it, fp32 elsewhere.
        `overlap_io`: decode and encode on helper threads; None: on a GPU only.
        `shifts`: passes per chunk at sub-hop offsets, averaged (models/shifts.py); None: the
        variant's default (2 for speech, 1 for music)."""
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_batch < 1 or not 0 < gpu_memory_fraction <= 1:
            raise ValueError("max_batch must be at least 1 and gpu_memory_fraction in (0, 1]")
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"unknown precision {precision!r}; use auto, fp32 or bf16")
        self.shifts = default_shifts(variant) if shifts is None else check_shifts(shifts)
        self.mode = mode
        self.choice: DeviceChoice = choose_device(mode, device)
        if threads:
            torch.set_num_threads(threads)
        self.plan = ChunkPlan.from_seconds(chunk_seconds, overlap_seconds, SAMPLE_RATE)
        self.variant, self.random_weights = variant, random_weights
        self.batch_size, self.max_batch, self.gpu_memory_fraction = batch_size, max_batch, gpu_memory_fraction
        self.precision, self.overlap_io = precision, overlap_io
        self._overrides = config_overrides or {}
        # per device: the model for the chosen device now, the CPU-size one loaded if a job
        # ever has to fall back to the CPU (a gpu-size network would be needlessly slow there)
        self._per_device = size == "auto" and checkpoint is None
        if self._per_device:
            pick = size_for_device(variant, self.choice.device.type, random_weights=random_weights)
            if pick.note:
                log.warning("%s on %s: %s", variant, self.choice.device, pick.note)
            self.loaded = self._load(pick.size, pick.path, pick.note)
        else:
            self.loaded = self._load(None if size == "auto" else size, checkpoint)
        self._cpu: LoadedModel | None = None
        self.loaded.model.eval().to(self.choice.device)
        self._device = self.choice.device  # where the current job runs
        self._active = self.loaded  # the model the current job runs

    def _load(self, size: str | None, checkpoint: str | Path | None, note: str | None = None) -> LoadedModel:
        """Build `size` (None: the size `checkpoint` declares) from `checkpoint`, the shipped one, or random."""
        if self.random_weights:
            size = size or "cpu"
            torch.manual_seed(0)  # reproducible random weights for tests and benchmarks
            model = BSLocoformer(load_config(self.variant, size, **self._overrides))
            log.warning("!!! %s/%s engine uses RANDOM WEIGHTS: its output is not a separation !!!",
                        self.variant, size)
            return LoadedModel(model, size, None, "random", note)
        path = checkpoint or default_checkpoint(self.variant, size or "cpu")
        if path is None:
            raise EngineError(f"no trained checkpoint for {self.variant}/{size or 'cpu'}; pass a checkpoint, "
                              f"or --random-weights for tests and benchmarks")
        try:
            ckpt = load_checkpoint(path)
            check_matches(ckpt, load_config(self.variant, size or ckpt.config.size, **self._overrides))
            model = build_model(ckpt)
        except CheckpointError as e:
            raise EngineError(str(e)) from e
        return LoadedModel(model, model.cfg.size, Path(path).name, ckpt.sha256, note)

    @property
    def model(self) -> BSLocoformer:
        return self.loaded.model

    @property
    def config(self):
        return self.loaded.model.cfg

    @property
    def weights_sha256(self) -> str:
        return self.loaded.sha256

    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.stems

    def _bf16(self) -> bool:
        if self.precision == "fp32":
            return False
        if self.precision == "bf16":
            return True
        return self._device.type == "cuda" and torch.cuda.is_bf16_supported()

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """(B, 2, n) float32 → (B, S, 2, n) float32 on the job's device and model, shift-averaged."""
        return shift_averaged(self._forward_once, batch, self.shifts, self._active.model.cfg.hop)

    def _forward_once(self, batch: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(batch).to(self._device)
        with torch.inference_mode(), torch.autocast(self._device.type, dtype=torch.bfloat16, enabled=self._bf16()):
            return self._active.model(x).float().cpu().numpy()

    def _chunk_bytes(self) -> int:
        """Peak GPU working memory of one full chunk, measured once per model on a zero chunk."""
        if self._active.chunk_bytes is None:
            dev = self._device
            torch.cuda.synchronize(dev)
            base = torch.cuda.memory_allocated(dev)
            torch.cuda.reset_peak_memory_stats(dev)
            self._forward_once(np.zeros((1, 2, self.plan.chunk), np.float32))  # passes run one after another
            self._active.chunk_bytes = max(1, torch.cuda.max_memory_allocated(dev) - base)
        return self._active.chunk_bytes

    def batch_for_job(self) -> int:
        if self.batch_size is not None:
            return self.batch_size
        if self._device.type != "cuda":
            return 1  # on a CPU a bigger batch only adds memory (benchmarks/engine_speed.py --batch)
        per_chunk = self._chunk_bytes()
        free, _ = torch.cuda.mem_get_info(self._device)
        # memory torch's allocator holds but does not use is free for us, though not for the driver
        free += torch.cuda.memory_reserved(self._device) - torch.cuda.memory_allocated(self._device)
        return batch_from_memory(free, per_chunk, self.gpu_memory_fraction, self.max_batch)

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
        self._device, self._active = ran.device, self.loaded
        try:
            timings = self._run(blocks(), expected, **job)
        except Exception as e:
            if ran.device.type == "cpu" or not is_device_fault(e):
                raise
            log.exception("device fault on %s; retrying the job once on CPU", ran.device)
            ran = DeviceChoice(torch.device("cpu"), True, f"{type(e).__name__} during the job: {e}")
            self._device, self._active = ran.device, self._cpu_model()
            timings = self._run(blocks(), expected, **job)
            self._restore_device()
        total = time.perf_counter() - started
        reports, frames = timings.pop("reports"), timings.pop("frames")
        batch, overlap_io, bf16 = timings.pop("batch"), timings.pop("overlap_io"), timings.pop("bf16")
        active, duration = self._active, frames / SAMPLE_RATE
        meta = {
            "model": active.model.cfg.name, "variant": active.model.cfg.variant, "size": active.size,
            "checkpoint": active.checkpoint, "size_note": active.note,
            "stems": list(self.stems), "weights_sha256": active.sha256,
            "random_weights": self.random_weights,
            "device": str(ran.device), "device_type": ran.device.type,
            "device_name": ran.name, "fallback": ran.fallback,
            "fallback_reason": ran.reason, "execution_mode": self.mode,
            "torch_threads": torch.get_num_threads(),
            "precision": "bf16-autocast" if bf16 else "fp32", "shifts": self.shifts, "batch": batch,
            "overlap_io": overlap_io,
            "sample_rate": SAMPLE_RATE, "chunk_samples": self.plan.chunk,
            "overlap_samples": self.plan.overlap, "chunks": self.plan.count(frames),
            "input": {"duration_s": round(duration, 3), "frames": frames,
                      **({"format": info.format, "subtype": info.subtype, "sample_rate": info.sample_rate,
                          "channels": info.channels} if info else {"format": "array"})},
            "output": {"format": fmt, "bitrate_kbps": bitrate, "normalize": normalize, "stems": [r.to_dict() for r in reports]},
            "timings": {**{k: round(v, 4) for k, v in timings.items()}, "total_s": round(total, 4),
                        "seconds_per_audio_minute": round(total / duration * 60, 3) if duration else None},
        }
        self._active = self.loaded
        return SeparationResult({r.name: r.path for r in reports}, str(ran.device), ran.fallback, ran.reason, meta)

    def _cpu_model(self) -> LoadedModel:
        """The model a job falling back to the CPU runs: the cpu-size one when sizes go by
        device, else this engine's own model, moved."""
        if self.loaded.model.cfg.size == "cpu" or not self._per_device:
            self.loaded.model.to("cpu")
            return self.loaded
        if self._cpu is None:
            pick = size_for_device(self.variant, "cpu", random_weights=self.random_weights)
            try:
                self._cpu = self._load(pick.size, pick.path)
            except EngineError:
                log.exception("no cpu-size %s model to fall back to; running the %s-size one on the CPU",
                              self.variant, self.loaded.size)
                self.loaded.model.to("cpu")
                return self.loaded
            self._cpu.model.eval()
            log.warning("%s: loaded the cpu-size model (%s) for jobs that fall back to the CPU",
                        self.variant, self._cpu.checkpoint or "random weights")
        if self._device.type == "cpu" and self.choice.device.type == "cuda":
            torch.cuda.empty_cache()  # what the failed job held on the GPU is not needed on the CPU
        return self._cpu

    def _restore_device(self) -> None:
        """After a fault, the next job tries the accelerator again (an OOM is usually one long
        job's); if the device is gone for good, the engine stays on the CPU and says why."""
        try:
            self.loaded.model.to(self.choice.device)
            torch.zeros(1, device=self.choice.device)  # a model already there is not a test of the device
        except Exception as e:
            log.exception("%s unusable after a fault; staying on CPU", self.choice.device)
            failed = self.choice
            self._device = torch.device("cpu")
            self.loaded = self._cpu_model()
            self.choice = DeviceChoice(torch.device("cpu"), True, f"{failed.device} failed: {type(e).__name__}: {e}")

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
        stats = BatchStats(self.batch_for_job())
        stats.first = stats.size
        cuda = self._device.type == "cuda"
        threaded = cuda if self.overlap_io is None else self.overlap_io

        def model(group: list[np.ndarray]) -> list[np.ndarray]:
            nonlocal model_s
            out: list[np.ndarray] = []
            while len(out) < len(group):
                n = min(stats.size, len(group) - len(out))
                t = time.perf_counter()
                try:
                    y = self._forward(np.stack(group[len(out):len(out) + n]))
                except torch.OutOfMemoryError:
                    if n == 1:
                        raise  # one chunk does not fit: the CPU fallback's business
                    stats.size, stats.oom_retries = n // 2, stats.oom_retries + 1
                    log.warning("out of memory on %s with %d chunks per forward; retrying with %d",
                                self._device, n, stats.size)
                    if cuda:
                        torch.cuda.empty_cache()
                    continue
                finally:
                    model_s += time.perf_counter() - t
                stats.forwards, stats.largest = stats.forwards + 1, max(stats.largest, n)
                out.extend(y)
            return out

        def write(segment: np.ndarray) -> None:
            for sink, stem_audio in zip(sinks, segment):
                sink.write(stem_audio)
            _trim_heap()

        frames = 0
        stream = chunks(blocks, self.plan)
        if threaded:
            stream = prefetched(stream, depth=stats.size)
        writer = SegmentWriter(write, threaded)
        try:
            for segment in apply_batched(model, stream, self.plan, lambda: stats.size, expected, progress):
                frames += segment.shape[-1]
                writer.put(segment)
            writer.close()
            t = time.perf_counter()
            reports = [sink.close() for sink in sinks]
            finish_s = time.perf_counter() - t
        except BaseException:
            writer.close(discard=True)  # no write may race the aborts below
            for sink in sinks:
                sink.abort()
            raise
        finally:
            stream.close()  # stops the decoding thread, if any
        return {"model_s": model_s, "write_s": writer.seconds, "finish_s": finish_s, "reports": reports,
                "frames": frames, "batch": stats.to_dict(), "overlap_io": threaded, "bf16": self._bf16()}
