"""Chunked application of a separation model with Hann crossfades and streaming overlap-add.

Chunk i covers [i·hop, i·hop + chunk) with hop = chunk − overlap; the last chunk ends at the
input's end and is shorter. Chunk count n = max(1, ⌈(N − overlap) / hop⌉), which guarantees the
last chunk is longer than the overlap, so every overlap region is a full crossfade.

Each chunk's output is weighted by a window that fades in over its first `overlap` samples
(not for the first chunk), is 1 in the middle and fades out over its last `overlap` samples
(not for the last chunk). The fade-out is computed as 1 − fade-in, so the two halves of each
overlap sum to exactly 1 and an identity model reproduces its input.

As soon as chunk i is done, [i·hop, (i+1)·hop) is final and is yielded; only the weighted
overlap tail is carried. Memory is one chunk's worth, whatever the input length.

Batching (`apply_batched`) runs up to N consecutive chunks of equal length in one call of the
model and then feeds the outputs to the same overlap-add in order, so the result is the
sequential one (up to the model's own batch-vs-single float differences). Only equal lengths
go together: the short last chunk is never padded, since padding changes what the network
sees at the edge. Memory is N chunks' worth, whatever the input length.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

Model = Callable[[np.ndarray], np.ndarray]  # (2, n) → (S, 2, n)
# [(2, n)] × B of equal n → B outputs (S, 2, n), in order
BatchModel = Callable[[list[np.ndarray]], Sequence[np.ndarray]]
Progress = Callable[[int, int], None]  # (chunks done, chunks expected)
Chunk = tuple[np.ndarray, bool]  # (chunk, is_last)


@dataclass(frozen=True)
class ChunkPlan:
    chunk: int
    overlap: int

    def __post_init__(self):
        if not 0 <= 2 * self.overlap < self.chunk:
            raise ValueError("overlap must be at least 0 and less than half a chunk")

    @classmethod
    def from_seconds(cls, chunk_s: float, overlap_s: float, sample_rate: int) -> "ChunkPlan":
        return cls(round(chunk_s * sample_rate), round(overlap_s * sample_rate))

    @property
    def hop(self) -> int:
        return self.chunk - self.overlap

    def count(self, length: int) -> int:
        return max(1, math.ceil((length - self.overlap) / self.hop))


def fade_in(overlap: int) -> np.ndarray:
    """Rising half of a Hann window, sampled at half-sample offsets (float64)."""
    t = (np.arange(overlap) + 0.5) / overlap
    return 0.5 - 0.5 * np.cos(np.pi * t)


def crossfade(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    w = np.ones(length)
    rise = fade_in(overlap)
    if not first:
        w[:overlap] = rise
    if not last:
        w[length - overlap:] = 1.0 - rise
    return w


def chunks(blocks: Iterable[np.ndarray], plan: ChunkPlan) -> Iterator[tuple[np.ndarray, bool]]:
    """Cut a stream of (C, n) blocks into overlapping chunks; yields (chunk, is_last).

    The input length need not be known: a chunk is the last when the stream ends inside it.
    """
    it = iter(blocks)
    buf = np.zeros((0, 0), dtype=np.float32)
    ended = False

    def fill(n: int) -> None:
        nonlocal buf, ended
        parts = [buf] if buf.size else []
        have = buf.shape[1] if buf.size else 0
        while have < n and not ended:
            try:
                block = next(it)
            except StopIteration:
                ended = True
                break
            parts.append(block)
            have += block.shape[1]
        if parts:
            buf = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]

    # one sample beyond the chunk tells whether the stream ends inside it
    fill(plan.chunk + 1)
    if buf.size == 0:
        return
    while True:
        last = buf.shape[1] <= plan.chunk
        yield buf[:, :plan.chunk], last
        if last:
            return
        buf = buf[:, plan.hop:]
        fill(plan.chunk + 1)


def overlap_add(outputs: Iterable[tuple[np.ndarray, bool]], plan: ChunkPlan) -> Iterator[np.ndarray]:
    """Crossfade per-chunk outputs (…, n) and yield final segments in order."""
    carry = None
    for i, (y, last) in enumerate(outputs):
        w = np.multiply(y, crossfade(y.shape[-1], plan.overlap, i == 0, last).astype(np.float32),
                        out=y if y.flags.writeable and y.dtype == np.float32 else None)
        if carry is not None:
            w[..., :plan.overlap] += carry
        if last:
            yield w
            return
        yield w[..., :w.shape[-1] - plan.overlap]
        carry = w[..., w.shape[-1] - plan.overlap:].copy()


def batches(stream: Iterable[Chunk], size: Callable[[], int]) -> Iterator[list[Chunk]]:
    """Group consecutive chunks of equal length, at most `size()` per group.

    `size` is asked again for every group, so a caller that had to shrink its batch (an
    out-of-memory on the device) gets smaller groups from then on. A group is yielded as soon
    as it is full or the stream ends, so at most one group is held.
    """
    group: list[Chunk] = []
    for item in stream:
        if group and (len(group) >= max(1, size()) or item[0].shape[-1] != group[0][0].shape[-1]):
            yield group
            group = []
        group.append(item)
    if group:
        yield group


def apply_batched(model: BatchModel, stream: Iterable[Chunk], plan: ChunkPlan, size: Callable[[], int],
                  expected_length: int | None = None, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Run `model` over chunks (from `chunks`) in batches; yield (S, 2, n) segments that tile the input."""
    total = plan.count(expected_length) if expected_length else 0

    def run() -> Iterator[Chunk]:
        done = 0
        for group in batches(stream, size):
            outputs = model([c for c, _ in group])
            if len(outputs) != len(group):
                raise ValueError(f"batch model returned {len(outputs)} outputs for {len(group)} chunks")
            for y, (_, last) in zip(outputs, group):
                done += 1
                if progress:
                    progress(done, done if last else max(total, done + 1))
                yield y, last

    return overlap_add(run(), plan)


def apply_chunked(model: Model, blocks: Iterable[np.ndarray], plan: ChunkPlan,
                  expected_length: int | None = None, progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Run `model` over the stream chunk by chunk; yield (S, 2, n) segments that tile the input."""
    return apply_batched(lambda xs: [model(xs[0])], chunks(blocks, plan), plan, lambda: 1,
                         expected_length, progress)
