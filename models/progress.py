"""A dependency-free progress bar for terminals (silent when stderr is not a terminal)."""

from __future__ import annotations

import shutil
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


class BatchProgress:
    """One status line for a batch of files on a terminal: where the batch is (file i of n,
    share of all the audio done, time left) and where the current file is (its chunks).

        [2/5  38%  eta 1m20s] song.mp3 [########------------] 3/8 chunks

    Silent when stderr is not a terminal; the caller prints one line per finished file."""

    def __init__(self, stream=sys.stderr, force: bool = False):
        self.stream = stream
        self.enabled = force or stream.isatty()
        self.count, self.total_s, self.done_s = 0, 0.0, 0.0
        self.index, self.label, self.file_s, self.fraction = 0, "", 0.0, 0.0
        self.started = time.monotonic()
        self._shown = False

    def begin(self, count: int, total_seconds: float) -> None:
        self.count, self.total_s, self.started = count, max(total_seconds, 1e-9), time.monotonic()

    def start(self, index: int, label: str, seconds: float) -> None:
        self.index, self.label, self.file_s, self.fraction = index, label, seconds, 0.0
        self._draw(0, 0)

    def __call__(self, done: int, total: int) -> None:
        self.fraction = done / total if total else 0.0
        self._draw(done, total)

    def done_file(self) -> None:
        self.done_s += self.file_s

    def clear(self) -> None:
        if self.enabled and self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def _draw(self, done: int, total: int) -> None:
        if not self.enabled:
            return
        overall = min(1.0, (self.done_s + self.fraction * self.file_s) / self.total_s)
        elapsed = time.monotonic() - self.started
        eta = f"  eta {_span(elapsed / overall - elapsed)}" if 0.02 < overall < 1 else ""
        width = 20
        bar = "#" * int(self.fraction * width) + "-" * (width - int(self.fraction * width))
        chunks = f" {done}/{total} chunks" if total else ""
        line = f"[{self.index}/{self.count} {overall:4.0%}{eta}] {self.label} [{bar}]{chunks}"
        columns = shutil.get_terminal_size((100, 20)).columns
        if len(line) >= columns:  # keep it on one line: shorten the file name
            cut = len(line) - columns + 2
            label = "…" + self.label[cut + 1:] if cut + 1 < len(self.label) else self.label[-8:]
            line = f"[{self.index}/{self.count} {overall:4.0%}{eta}] {label} [{bar}]{chunks}"
        self.stream.write("\r\x1b[K" + line)
        self.stream.flush()
        self._shown = True


def _span(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"
