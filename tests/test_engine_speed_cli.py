"""benchmarks/engine_speed.py --device cuda refuses clearly where no CUDA device is visible."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cuda_benchmark_refuses_without_a_cuda_device(tmp_path):
    # CUDA_VISIBLE_DEVICES="" hides any GPU, so this holds on a GPU machine too
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "engine_speed.py"), "--device", "cuda",
                          "--json", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert out.returncode == 2 and "no CUDA device" in out.stderr, out.stderr
    assert not (tmp_path / "r.json").exists() and "s/min" not in out.stdout
