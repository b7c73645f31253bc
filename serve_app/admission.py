"""Admission of uploads into the ingress: how many at once, per key and in all, and how many
bytes may sit in memory.

Why: the ingress is one async process with a bounded number of requests in flight. Without
limits one key could hold every slot with slow uploads (one byte every 2 s), and /healthz
and every other caller's status poll would queue behind them; and an `audio_url` download
is held in memory until it is spooled, so parallel large ones could grow the process past the
host (uploaded files go to disk as they arrive and never count: serve_app/uploads.py).
Both limits refuse at once (a 429 for the key's own limit, a 503 for the service's), before
anything is charged, so a refused request costs the ingress nothing but its headers.

Plain classes, no Ray, no locks: they run on the ingress's single event loop.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass


@dataclass(frozen=True)
class Refusal:
    status: int
    slug: str
    detail: str


class UploadGate:
    """Uploads in progress: at most `per_key` for one key, `total` in all."""

    def __init__(self, per_key: int, total: int):
        self.per_key, self.total = per_key, total
        self._by_key: Counter[str] = Counter()

    def enter(self, who: str) -> Refusal | None:
        if self._by_key[who] >= self.per_key:
            return Refusal(429, "too-many-uploads", f"this API key already has {self.per_key} uploads in "
                                                    "progress; wait for one to finish")
        if sum(self._by_key.values()) >= self.total:
            return Refusal(503, "busy", f"the service is receiving {self.total} uploads already")
        self._by_key[who] += 1
        return None

    def leave(self, who: str) -> None:
        self._by_key[who] -= 1
        if self._by_key[who] <= 0:
            del self._by_key[who]

    def __len__(self) -> int:
        return sum(self._by_key.values())


class MemoryBudget:
    """Bytes of audio downloads held in memory at once, across requests."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def take(self, n: int) -> Refusal | None:
        if self.held + n > self.limit:
            return Refusal(503, "busy", f"the service holds {self.held // 2**20} MiB of uploads in memory; "
                                        f"this one needs {-(-n // 2**20)} MiB more than the {self.limit // 2**20} "
                                        "MiB it allows")
        self.held += n
        return None

    def give(self, n: int) -> None:
        self.held = max(0, self.held - n)


class Admission:
    """One request's share of the gate and the budget, given back once (at the latest when the
    request ends; the ingress gives it back as soon as the job's input is stored)."""

    def __init__(self, gate: UploadGate, who: str, budget: MemoryBudget):
        self.gate, self.who, self.budget = gate, who, budget
        self.bytes, self.released = 0, False

    def take(self, n: int) -> Refusal | None:
        refusal = self.budget.take(n)
        if refusal is None:
            self.bytes += n
        return refusal

    def release(self) -> None:
        if not self.released:
            self.released = True
            self.gate.leave(self.who)
            self.budget.give(self.bytes)
