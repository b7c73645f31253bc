"""Device policy: which torch device a job may use, and what happened when it asked.

`cpu_only` (the free tier) never initializes CUDA and refuses any other device outright.
`gpu_allowed` uses CUDA when it initializes and otherwise falls back to the CPU, saying why.
"""

from __future__ import annotations

import logging
import platform
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import torch

ExecutionMode = Literal["cpu_only", "gpu_allowed"]
DeviceRequest = Literal["auto", "cpu", "cuda"]

log = logging.getLogger(__name__)


class DeviceNotAllowed(RuntimeError):
    """A constraint refused the requested device (never retried, never downgraded)."""


@dataclass(frozen=True)
class DeviceChoice:
    device: torch.device
    fallback: bool = False
    reason: str | None = None

    @property
    def name(self) -> str:
        if self.device.type == "cuda":
            return torch.cuda.get_device_name(self.device)
        return _cpu_name()


@lru_cache(maxsize=1)
def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def _cuda_ready() -> tuple[bool, str | None]:
    try:
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible to this process"
        torch.zeros(1, device="cuda")  # is_available() can say yes while the driver still fails
        return True, None
    except Exception as e:  # driver, runtime or build errors all mean: not usable
        return False, f"CUDA failed to initialize: {type(e).__name__}: {e}"


def choose_device(mode: ExecutionMode, requested: DeviceRequest = "auto") -> DeviceChoice:
    if requested not in ("auto", "cpu", "cuda"):
        raise ValueError(f"unknown device {requested!r}; use auto, cpu or cuda")
    if mode == "cpu_only":
        if requested == "cuda":
            raise DeviceNotAllowed("this engine runs on CPU only (cpu_only); device 'cuda' is refused")
        return DeviceChoice(torch.device("cpu"))
    if mode != "gpu_allowed":
        raise ValueError(f"unknown execution mode {mode!r}")
    if requested == "cpu":
        return DeviceChoice(torch.device("cpu"))
    ok, why = _cuda_ready()
    if ok:
        return DeviceChoice(torch.device("cuda"))
    # a warning only for who asked for CUDA by name; "auto" on a machine without a GPU is no news
    log.log(logging.WARNING if requested == "cuda" else logging.INFO, "falling back to CPU: %s", why)
    return DeviceChoice(torch.device("cpu"), fallback=True, reason=why)


def is_device_fault(error: BaseException) -> bool:
    """An error of the accelerator (OOM, driver, launch), as opposed to a bug or a bad input."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    accel = getattr(torch, "AcceleratorError", None)
    if accel is not None and isinstance(error, accel):
        return True
    return isinstance(error, RuntimeError) and any(s in str(error) for s in ("CUDA", "cuDNN", "cuBLAS", "NCCL"))
