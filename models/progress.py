"""A dependency-free progress bar for terminals (silent when stderr is not a terminal)."""

from __future__ import annotations

import sys
import time


class ProgressBar:
    def __init__(self, label: str, unit: str = "", stream=sys.stderr, force: bool = False):
        self.label, self.unit, self.stream = label, unit, stream
        self.enabled = force or stream.isatty()
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        width = 30
        frac = done / total if total else 0.0
        elapsed = time.monotonic() - self.started
        eta = f" eta {elapsed / frac - elapsed:5.0f}s" if 0 < frac < 1 else ""
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        self.stream.write(f"\r{self.label} [{bar}] {done}/{total}{self.unit} {elapsed:5.0f}s{eta}")
        if done >= total:
            self.stream.write("\n")
        self.stream.flush()
