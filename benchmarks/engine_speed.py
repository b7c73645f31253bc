"""Engine speed and memory on this machine: seconds per minute of audio and peak-RSS growth.

    python benchmarks/engine_speed.py [--runs 5] [--threads 2] [--variants 2stem 5stem]
                                      [--long-minutes 20] [--skip-memory] [--skip-peers] [--batch N]
    python benchmarks/engine_speed.py --device cuda [--variants 5stem] [--minutes 1 10] [--runs 3]
                                      [--size gpu|cpu] [--batch N] [--cpu-threads N] [--skip-cpu]
                                      [--json results.json]

Speed: a 60 s 44.1 kHz stereo WAV through `SeparationEngine.separate` (decode, 18 s chunks
with 1.75 s crossfades, conditioning, WAV encoding), one warm-up then `--runs` timed runs;
the median is reported. Weights: the shipped checkpoint when present, else random (speed
does not depend on the weights' values). `--batch N` runs N chunks per forward (the CPU's
default is 1).

Memory: each job runs in a fresh process. After the engine is built and warmed up, the
process's peak-RSS counter is reset (/proc/self/clear_refs) and the job's peak growth over
the resident size before it is read from VmHWM, for a 1-minute and a long input.

Peers (optional, `pip install -r benchmarks/peers.txt`): Demucs's HTDemucs and Open-Unmix
(random weights, their own chunking) on the same 60 s, in the same run, as references.

`--device cuda`: the GPU engine (the `--size` network, default gpu: 5stem-gpu.pt, or random
weights of that shape until it ships; bf16 autocast, batched chunks, decode and encode on
helper threads) on `--minutes` of audio each (default 1 and 10): median s per minute, the
batch size the engine chose (or `--batch`), forwards, OOM retries and peak GPU memory
(torch.cuda.max_memory_allocated over the job, reset after the warm-up); then the cpu-size
model on the same machine's CPU (`--cpu-threads`, default all cores) on the same inputs.
Refuses with "no CUDA device" where there is none.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SR = 44100
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def music_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Deterministic stereo test signal (tones, noise bursts), written in 10 s blocks."""
    rng = np.random.default_rng(seed)
    out = []
    for start in range(0, int(seconds), 10):
        n = int(min(10, seconds - start) * SR)
        t = (np.arange(n) + start * SR) / SR
        f = rng.uniform(80, 800, size=4)
        left = sum(0.1 * np.sin(2 * np.pi * fi * t) for fi in f[:2]) + 0.05 * rng.standard_normal(n)
        right = sum(0.1 * np.sin(2 * np.pi * fi * t) for fi in f[2:]) + 0.05 * rng.standard_normal(n)
        out.append(np.stack([left, right], axis=1).astype(np.float32))
    return np.concatenate(out)


def write_input(folder: Path, seconds: float) -> Path:
    path = folder / f"input_{int(seconds)}s.wav"
    with sf.SoundFile(path, "w", SR, 2, subtype="PCM_16") as f:
        for start in range(0, int(seconds), 60):
            f.write(music_like(min(60, seconds - start), seed=start))
    return path


def engine_for(variant: str, threads: int, batch: int | None = None, device: str = "cpu", size: str = "cpu"):
    from models.checkpoint import default_checkpoint
    from models.engine import SeparationEngine

    ckpt = default_checkpoint(variant, size)
    if device == "cpu":
        return SeparationEngine(variant, ckpt, size=size, random_weights=ckpt is None, threads=threads,
                                batch_size=batch)
    engine = SeparationEngine(variant, ckpt, mode="gpu_allowed", device="cuda", size=size,
                              random_weights=ckpt is None, threads=threads, batch_size=batch)
    if engine.choice.device.type != "cuda":
        sys.exit(f"engine_speed: the engine fell back to the CPU: {engine.choice.reason}")
    return engine


def speed(variant: str, path: Path, runs: int, threads: int, batch: int | None = None) -> dict:
    engine = engine_for(variant, threads, batch)
    with tempfile.TemporaryDirectory() as out:
        engine.separate(path, out)  # warm-up
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            engine.separate(path, out)
            times.append(time.perf_counter() - t)
    duration = sf.info(path).duration
    per_min = [t / duration * 60 for t in times]
    return {"variant": variant, "weights": engine.weights_sha256[:12], "threads": threads,
            "batch": engine.batch_for_job(), "median_s_per_min": round(statistics.median(per_min), 2),
            "runs_s_per_min": [round(x, 2) for x in per_min]}


def cuda_missing() -> str | None:
    """Why there is no usable CUDA device, or None."""
    import torch

    if not torch.cuda.is_available():
        return (f"no CUDA device (torch {torch.__version__}, "
                f"{'CUDA ' + torch.version.cuda if torch.version.cuda else 'a CPU-only build'})")
    return None


def timed_jobs(engine, path: Path, runs: int, cuda: bool) -> dict:
    """`runs` jobs on a warm engine: median s per minute, the batch the jobs ran, peak GPU memory."""
    import torch

    duration = sf.info(path).duration
    per_min, peaks, meta = [], [], {}
    with tempfile.TemporaryDirectory() as out:
        for _ in range(runs):
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            t = time.perf_counter()
            meta = engine.separate(path, out).metadata
            per_min.append((time.perf_counter() - t) / duration * 60)
            if cuda:
                peaks.append(torch.cuda.max_memory_allocated() / 2**20)
    return {"minutes": round(duration / 60, 2), "median_s_per_min": round(statistics.median(per_min), 3),
            "runs_s_per_min": [round(x, 3) for x in per_min], "batch": meta["batch"],
            "precision": meta["precision"], "size": meta["size"], "checkpoint": meta["checkpoint"],
            "device_name": meta["device_name"], "peak_gpu_mib": round(max(peaks), 1) if peaks else None}


def cuda_main(args) -> None:
    import torch

    why = cuda_missing()
    if why:
        print(f"engine_speed: {why}; --device cuda needs one", file=sys.stderr)
        sys.exit(2)
    cpu_threads = args.cpu_threads or os.cpu_count()
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), {torch.cuda.get_device_name()}, "
          f"{os.cpu_count()} CPUs")
    results = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(), "cpus": os.cpu_count(),
               "gpu_runs": [], "cpu_runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        inputs = [write_input(Path(tmp), m * 60) for m in args.minutes]
        print(f"\n## GPU: s per minute of 44.1 kHz stereo (median of {args.runs}), size {args.size}")
        for variant in args.variants:
            engine = engine_for(variant, cpu_threads, args.batch, "cuda", args.size)
            with tempfile.TemporaryDirectory() as out:
                engine.separate(inputs[0], out)  # warm-up: kernels, cuDNN plans, the batch's measurement
            for path in inputs:
                r = {"variant": variant, **timed_jobs(engine, path, args.runs, cuda=True)}
                results["gpu_runs"].append(r)
                b = r["batch"]
                print(f"{variant} {r['minutes']:g} min: {r['median_s_per_min']:.3f} s/min  batch {b['size']} "
                      f"(largest {b['largest']}, {b['forwards']} forwards, {b['oom_retries']} OOM retries)  "
                      f"peak GPU {r['peak_gpu_mib']:.0f} MiB  {r['precision']}, {r['size']} size "
                      f"({r['checkpoint'] or 'random weights'})  runs {r['runs_s_per_min']}")
            del engine
            torch.cuda.empty_cache()
        if not args.skip_cpu:
            print(f"\n## The same machine's CPU, cpu-size model, {cpu_threads} threads (median of {args.runs})")
            for variant in args.variants:
                engine = engine_for(variant, cpu_threads)
                with tempfile.TemporaryDirectory() as out:
                    engine.separate(inputs[0], out)
                for path in inputs:
                    r = {"variant": variant, "threads": cpu_threads, **timed_jobs(engine, path, args.runs, cuda=False)}
                    results["cpu_runs"].append(r)
                    print(f"{variant} {r['minutes']:g} min: {r['median_s_per_min']:.3f} s/min  "
                          f"({r['checkpoint'] or 'random weights'})  runs {r['runs_s_per_min']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(variant: str, path: str, threads: int, batch: int | None = None) -> None:
    """Runs in a fresh process: print the job's peak RSS growth as JSON."""
    engine = engine_for(variant, threads, batch)
    with tempfile.TemporaryDirectory() as out:
        engine.separate(np.zeros((2, 20 * SR), np.float32), out)  # warm-up on a full chunk, as a serving replica
        before = _rss_kib("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        t = time.perf_counter()
        engine.separate(path, out)
        wall = time.perf_counter() - t
        peak = _rss_kib("VmHWM")
    print(json.dumps({"rss_before_mib": round(before / 1024, 1), "peak_mib": round(peak / 1024, 1),
                      "growth_mib": round((peak - before) / 1024, 1), "wall_s": round(wall, 1)}))


def memory(variant: str, path: Path, threads: int, batch: int | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", variant, str(path), "--threads", str(threads)]
                         + (["--batch", str(batch)] if batch else []), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["2stem", "5stem"])
    p.add_argument("--long-minutes", type=float, default=20)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--batch", type=int, help="chunks per forward (default: the engine's: 1 on CPU, by memory on GPU)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--minutes", type=float, nargs="+", default=[1, 10], help="--device cuda: input lengths")
    p.add_argument("--size", choices=["cpu", "gpu"], default="gpu", help="--device cuda: the network size")
    p.add_argument("--cpu-threads", type=int, help="--device cuda: threads of the CPU comparison (default: all)")
    p.add_argument("--skip-cpu", action="store_true", help="--device cuda: no CPU comparison")
    p.add_argument("--json", help="--device cuda: also write the results here")
    p.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.batch is not None and args.batch < 1:
        p.error("--batch must be at least 1")
    if args.memory_child:
        memory_child(*args.memory_child, args.threads, args.batch)
        return
    if args.device == "cuda":
        cuda_main(args)
        return

    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {args.threads}"
          + (f", batch {args.batch}" if args.batch else ""))
    with tempfile.TemporaryDirectory() as tmp:
        minute = write_input(Path(tmp), 60)
        print("\n## Speed: 60 s of 44.1 kHz stereo, seconds per minute of audio")
        for variant in args.variants:
            r = speed(variant, minute, args.runs, args.threads, args.batch)
            print(f"{variant}: median {r['median_s_per_min']:.2f} s/min  runs {r['runs_s_per_min']}  "
                  f"(weights {r['weights']}, batch {r['batch']})")
        if not args.skip_peers:
            from peers import run_peers
            run_peers(minute, args.runs, args.threads)
        if not args.skip_memory:
            long = write_input(Path(tmp), args.long_minutes * 60)
            print(f"\n## Peak RSS growth per job (fresh process each), 1 min vs {args.long_minutes:g} min")
            for variant in args.variants:
                short_m = memory(variant, minute, args.threads, args.batch)
                long_m = memory(variant, long, args.threads, args.batch)
                print(f"{variant}: 1 min +{short_m['growth_mib']} MiB (peak {short_m['peak_mib']} MiB), "
                      f"{args.long_minutes:g} min +{long_m['growth_mib']} MiB (peak {long_m['peak_mib']} MiB, "
                      f"{long_m['wall_s']} s)")


if __name__ == "__main__":
    main()
