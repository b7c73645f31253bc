"""Priority job queue: levels high > normal > low, FIFO within a level, aging, bounded depth.

A plain class (no Ray): the dispatcher keeps one per model deployment, and its tests run in
milliseconds. Aging: a job that has waited `aging_s` counts as one level higher, two levels
after 2·aging_s, and so on, so a flood of paying jobs delays a free job but cannot starve
it. Among equally ranked jobs the one that arrived first goes first. Depth is bounded per
level; past it, `put` raises QueueFull and the caller is told to retry later.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

LEVELS = ("high", "normal", "low")


class QueueFull(Exception):
    def __init__(self, level: str, depth: int):
        super().__init__(f"the {level}-priority queue is full ({depth} jobs)")
        self.level, self.depth = level, depth


@dataclass
class Entry:
    job_id: str
    level: int
    enqueued: float
    seq: int
    payload: Any = None
    future: asyncio.Future | None = field(default=None, repr=False)


class PriorityJobQueue:
    def __init__(self, max_depth: int = 100, aging_s: float | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.max_depth, self.aging_s, self.clock = max_depth, aging_s, clock
        self._levels: list[deque[Entry]] = [deque() for _ in LEVELS]
        self._seq = itertools.count()
        self._ready = asyncio.Event() if _loop_running() else None

    def _rank(self, e: Entry, now: float) -> tuple[int, float, int]:
        aged = int((now - e.enqueued) // self.aging_s) if self.aging_s else 0
        return max(0, e.level - aged), e.enqueued, e.seq

    def put(self, job_id: str, priority: str, payload: Any = None, *, enqueued: float | None = None,
            force: bool = False) -> Entry:
        """`enqueued`: when it arrived on this queue's clock (a job rebuilt from its record keeps
        its place and its aging); `force`: past the depth bound, for jobs accepted already."""
        level = LEVELS.index(priority)
        if not force and len(self._levels[level]) >= self.max_depth:
            raise QueueFull(priority, self.max_depth)
        entry = Entry(job_id, level, self.clock() if enqueued is None else enqueued, next(self._seq), payload)
        q = self._levels[level]
        # each level stays in arrival order (pop looks only at heads): a job rebuilt with an
        # earlier arrival goes before the later ones
        at = len(q)
        while at > 0 and q[at - 1].enqueued > entry.enqueued:
            at -= 1
        q.insert(at, entry)
        if self._ready is not None:
            self._ready.set()
        return entry

    def pop(self) -> Entry | None:
        """The next job, or None; only each level's head can be next (it has waited longest)."""
        now = self.clock()
        heads = [(self._rank(q[0], now), i) for i, q in enumerate(self._levels) if q]
        if not heads:
            return None
        _, i = min(heads)
        return self._levels[i].popleft()

    async def get(self) -> Entry:
        if self._ready is None:
            self._ready = asyncio.Event()
        while True:
            entry = self.pop()
            if entry is not None:
                return entry
            self._ready.clear()
            await self._ready.wait()

    def cancel(self, job_id: str) -> Entry | None:
        for q in self._levels:
            for e in q:
                if e.job_id == job_id:
                    q.remove(e)
                    return e
        return None

    def position(self, job_id: str) -> int | None:
        """0 = next to run, by the current ranking (aging may still move it up)."""
        now = self.clock()
        order = sorted((self._rank(e, now), e.job_id) for q in self._levels for e in q)
        for pos, (_, jid) in enumerate(order):
            if jid == job_id:
                return pos
        return None

    def depth(self) -> dict[str, int]:
        return {name: len(q) for name, q in zip(LEVELS, self._levels)}

    def __len__(self) -> int:
        return sum(len(q) for q in self._levels)


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
