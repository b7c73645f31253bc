"""Engine speed and memory on this machine: seconds per minute of audio and peak-RSS growth.

    python benchmarks/engine_speed.py [--runs 5] [--threads 2] [--variants 2stem 5stem]
                                      [--long-minutes 20] [--skip-memory] [--skip-peers]

Speed: a 60 s 44.1 kHz stereo WAV through `SeparationEngine.separate` (decode, 18 s chunks
with 1.75 s crossfades, conditioning, WAV encoding), one warm-up then `--runs` timed runs;
the median is reported. Weights: the shipped checkpoint when present, else random (speed
does not depend on the weights' values).

Memory: each job runs in a fresh process. After the engine is built and warmed up, the
process's peak-RSS counter is reset (/proc/self/clear_refs) and the job's peak growth over
the resident size before it is read from VmHWM, for a 1-minute and a long input.

Peers (optional, `pip install -r benchmarks/peers.txt`): Demucs's HTDemucs and Open-Unmix
(random weights, their own chunking) on the same 60 s, in the same run, as references.
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


def engine_for(variant: str, threads: int):
    from models.checkpoint import default_checkpoint
    from models.engine import SeparationEngine

    ckpt = default_checkpoint(variant)
    return SeparationEngine(variant, ckpt, random_weights=ckpt is None, threads=threads)


def speed(variant: str, path: Path, runs: int, threads: int) -> dict:
    engine = engine_for(variant, threads)
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
            "median_s_per_min": round(statistics.median(per_min), 2),
            "runs_s_per_min": [round(x, 2) for x in per_min]}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_child(variant: str, path: str, threads: int) -> None:
    """Runs in a fresh process: print the job's peak RSS growth as JSON."""
    engine = engine_for(variant, threads)
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


def memory(variant: str, path: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--memory-child", variant, str(path), "--threads", str(threads)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--variants", nargs="+", default=["2stem", "5stem"])
    p.add_argument("--long-minutes", type=float, default=20)
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-peers", action="store_true")
    p.add_argument("--memory-child", nargs=2, metavar=("VARIANT", "PATH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.threads)
        return

    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch threads {args.threads}")
    with tempfile.TemporaryDirectory() as tmp:
        minute = write_input(Path(tmp), 60)
        print("\n## Speed: 60 s of 44.1 kHz stereo, seconds per minute of audio")
        for variant in args.variants:
            r = speed(variant, minute, args.runs, args.threads)
            print(f"{variant}: median {r['median_s_per_min']:.2f} s/min  runs {r['runs_s_per_min']}  "
                  f"(weights {r['weights']})")
        if not args.skip_peers:
            from peers import run_peers
            run_peers(minute, args.runs, args.threads)
        if not args.skip_memory:
            long = write_input(Path(tmp), args.long_minutes * 60)
            print(f"\n## Peak RSS growth per job (fresh process each), 1 min vs {args.long_minutes:g} min")
            for variant in args.variants:
                short_m, long_m = memory(variant, minute, args.threads), memory(variant, long, args.threads)
                print(f"{variant}: 1 min +{short_m['growth_mib']} MiB (peak {short_m['peak_mib']} MiB), "
                      f"{args.long_minutes:g} min +{long_m['growth_mib']} MiB (peak {long_m['peak_mib']} MiB, "
                      f"{long_m['wall_s']} s)")


if __name__ == "__main__":
    main()
