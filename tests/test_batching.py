"""Batched chunk inference (issue 11, point 1), on the CPU: grouping, equality with sequential
processing, bounded memory, the OOM retry with a halved batch, the helper threads, and the
fp32 mask head under bf16 autocast.

Where a test needs a GPU that this machine lacks, it pretends (a CUDA `DeviceChoice` over a
model that really runs on the CPU) and says so in a comment marked FAKE. The same behaviour
on a real GPU: tests/test_gpu.py (`pytest -m gpu`)."""

import threading

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_fixtures import music_like
from models.apply import ChunkPlan, apply_batched, batches, chunks
from models.bslocoformer import BSLocoformer
from models.config import load_config
from models.device import DeviceChoice
from models.engine import SegmentWriter, SeparationEngine, batch_from_memory, prefetched
from models.stems import StemSink

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)
PLAN = ChunkPlan(chunk=1000, overlap=100)


def engine(variant="5stem", **kw):
    kw.setdefault("random_weights", True)
    eng = SeparationEngine(variant, chunk_seconds=2.0, overlap_seconds=0.25, config_overrides=TINY, **kw)
    scramble_masks(eng.model)
    return eng


def scramble_masks(model):
    """Untrained decoders give every stem mask 1/S whatever the network computes, which would
    make any batching look right: random output weights make the stems depend on it."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for g in model.groups:
            g.dec_out.weight.copy_(torch.randn(g.dec_out.weight.shape, generator=gen) * 0.3)


def stems_of(result):
    return {name: sf.read(path, dtype="float32", always_2d=True)[0].T for name, path in result.stems.items()}


def chunk_stream(lengths):
    return [(np.full((2, n), i, np.float32), i == len(lengths) - 1) for i, n in enumerate(lengths)]


# --- grouping and the batched overlap-add (pure) -------------------------------------------

def test_batches_group_equal_lengths_only_and_follow_the_size():
    stream = chunk_stream([10, 10, 10, 10, 10, 7])
    sizes = iter([3, 3, 2, 2, 2])
    got = [[int(c[0, 0]) for c, _ in g] for g in batches(stream, lambda: next(sizes))]
    # a size asked again for each group (halved after an OOM); the short last chunk alone
    assert got == [[0, 1, 2], [3, 4], [5]]
    assert [[int(c[0, 0]) for c, _ in g] for g in batches(chunk_stream([10, 10, 10, 10]), lambda: 8)] == [[0, 1, 2, 3]]


def affine(chunk):  # a per-chunk model whose output depends on the chunk's position in time
    return np.stack([chunk + 0.5, -2 * chunk])


@pytest.mark.parametrize("length", [1, 999, 1000, 1801, 2800, 9999])
@pytest.mark.parametrize("size", [2, 3, 8])
def test_apply_batched_equals_sequential(length, size):
    x = np.random.default_rng(length).standard_normal((2, length)).astype(np.float32)
    blocks = lambda: (x[:, i:i + 337] for i in range(0, length, 337))  # noqa: E731
    seen = []

    def batch_model(group):
        seen.append(len(group))
        assert len({c.shape for c in group}) == 1  # never mixed lengths
        return [affine(c) for c in group]

    one = np.concatenate(list(apply_batched(lambda g: [affine(c) for c in g], chunks(blocks(), PLAN), PLAN,
                                            lambda: 1)), -1)
    many = np.concatenate(list(apply_batched(batch_model, chunks(blocks(), PLAN), PLAN, lambda: size)), -1)
    assert many.shape == (2, 2, length)
    np.testing.assert_array_equal(many, one)
    assert max(seen) <= size and sum(seen) == PLAN.count(length)


def test_batched_memory_is_bounded_by_the_batch():
    """However long the input, at most one batch of chunks is pulled ahead of the output."""
    size, pulled, ahead = 3, [0], []

    def stream():
        for item in chunks([np.zeros((2, 100_000), np.float32)], PLAN):
            pulled[0] += 1
            yield item

    for done, _ in enumerate(apply_batched(lambda g: [affine(c) for c in g], stream(), PLAN, lambda: size), 1):
        ahead.append(pulled[0] - done)
    assert len(ahead) == PLAN.count(100_000) and max(ahead) <= size


def test_progress_counts_chunks_in_batches():
    seen = []
    list(apply_batched(lambda g: [affine(c) for c in g], chunks([np.zeros((2, 2800), np.float32)], PLAN), PLAN,
                       lambda: 2, 2800, lambda d, t: seen.append((d, t))))
    assert seen == [(1, 3), (2, 3), (3, 3)]


def test_batch_from_memory():
    gib = 1 << 30
    assert batch_from_memory(80 * gib, 2 * gib, 0.6, 8) == 8  # capped: memory bounded on a big GPU
    assert batch_from_memory(10 * gib, 2 * gib, 0.6, 8) == 3  # 6 GiB of 10 free: 3 chunks
    assert batch_from_memory(1 * gib, 2 * gib, 0.6, 8) == 1  # not even one: try one, then the OOM path
    assert batch_from_memory(10 * gib, 0, 0.6, 4) == 4


# --- the engine: batched output equals sequential ------------------------------------------

def test_engine_batched_equals_sequential_and_reports_the_batch(tmp_path):
    x = music_like(7.5).T.copy()  # chunks of 2 s, hop 1.75 s: 4 full chunks and a short last one
    seq = engine(batch_size=1).separate(x, tmp_path / "seq")
    reference = stems_of(seq)
    assert not np.allclose(reference["drums"], x / 5, atol=1e-3)  # the network shapes the stems
    assert seq.metadata["batch"] == {"size": 1, "largest": 1, "forwards": 5, "oom_retries": 0}
    for size, forwards in [(2, 3), (3, 3), (8, 2)]:
        batched = engine(batch_size=size).separate(x, tmp_path / f"b{size}")
        for name, y in stems_of(batched).items():
            np.testing.assert_allclose(y, reference[name], atol=2e-5, rtol=0, err_msg=f"{name}, batch {size}")
        assert batched.metadata["batch"] == {"size": size, "largest": min(size, 4), "forwards": forwards,
                                             "oom_retries": 0}
        assert batched.metadata["precision"] == "fp32" and batched.metadata["overlap_io"] is False


def test_cpu_defaults_to_one_chunk_per_forward(tmp_path):
    result = engine().separate(music_like(4.0).T.copy(), tmp_path)
    assert result.metadata["batch"]["size"] == 1 and result.metadata["overlap_io"] is False


def test_helper_threads_give_the_same_stems_and_stop(tmp_path):
    x = music_like(7.5).T.copy()
    reference = stems_of(engine(batch_size=1).separate(x, tmp_path / "seq"))
    threaded = engine(batch_size=2, overlap_io=True).separate(x, tmp_path / "thr")
    assert threaded.metadata["overlap_io"] is True
    for name, y in stems_of(threaded).items():
        np.testing.assert_allclose(y, reference[name], atol=2e-5, rtol=0)
    assert not [t for t in threading.enumerate() if t.name.startswith("locoserve-")]


def test_bf16_autocast_runs_the_engine_close_to_fp32(tmp_path):
    x = music_like(4.0).T.copy()
    ref = stems_of(engine(batch_size=2).separate(x, tmp_path / "fp32"))
    result = engine(batch_size=2, precision="bf16").separate(x, tmp_path / "bf16")
    assert result.metadata["precision"] == "bf16-autocast"
    for name, y in stems_of(result).items():
        err = np.sqrt(np.mean((y - ref[name]) ** 2)) / np.sqrt(np.mean(ref[name] ** 2))
        assert 0 < err < 0.05, name  # bf16 did run (not bit-equal), and stayed close


def test_mask_head_runs_in_fp32_under_autocast(monkeypatch):
    model = BSLocoformer(load_config("5stem", "cpu", **TINY)).eval()
    scramble_masks(model)
    seen = {}
    einsum = torch.einsum

    def spy(eq, *ops):
        out = einsum(eq, *ops)
        seen.setdefault(eq, set()).add(out.dtype)
        return out

    monkeypatch.setattr(torch, "einsum", spy)
    x = torch.randn(2, 2, 8192) * 0.1
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.dtype == torch.float32
    assert seen["...ni,nio->...no"] >= {torch.bfloat16}  # the band encoders did run in bf16
    assert seen["btnh,nhgwc->btngwc"] == {torch.float32}  # the masks did not


# --- out of memory: a halved batch before any CPU fallback ---------------------------------

def oom_above(eng, limit, log):
    """Wraps the real forward: a batch of more than `limit` chunks raises CUDA's OOM error."""
    forward = eng._forward

    def run(batch):
        log.append((eng._device.type, batch.shape[0]))
        if batch.shape[0] > limit:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")
        return forward(batch)
    return run


def test_oom_halves_the_batch_and_the_stems_are_unchanged(tmp_path, monkeypatch):
    x = music_like(9.25).T.copy()  # 5 full chunks and a short last one
    reference = stems_of(engine(batch_size=1).separate(x, tmp_path / "seq"))
    eng, log = engine(batch_size=4), []
    monkeypatch.setattr(eng, "_forward", oom_above(eng, 2, log))
    result = eng.separate(x, tmp_path / "oom")
    assert [n for _, n in log] == [4, 2, 2, 1, 1]  # 4 fails; 2 + 2, then the 5th and the short last
    assert result.metadata["batch"] == {"size": 4, "largest": 2, "forwards": 4, "oom_retries": 1}
    assert not result.fallback
    for name, y in stems_of(result).items():
        np.testing.assert_allclose(y, reference[name], atol=2e-5, rtol=0)


def fake_gpu(eng, monkeypatch):
    """FAKE: the job's device says CUDA while the tensors stay on the CPU (no GPU here)."""
    eng.choice = DeviceChoice(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")

    def forward(batch):
        with torch.inference_mode():
            return eng._active.model(torch.from_numpy(batch)).numpy()
    return forward


def test_oom_on_a_gpu_shrinks_the_batch_and_stays_on_the_gpu(tmp_path, monkeypatch):
    eng, log = engine(mode="gpu_allowed", device="cpu", batch_size=4, precision="fp32"), []
    real = fake_gpu(eng, monkeypatch)

    def forward(batch):
        log.append(batch.shape[0])
        if batch.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(eng, "_forward", forward)
    result = eng.separate(music_like(7.5).T.copy(), tmp_path)
    assert log == [4, 2, 1, 1, 1, 1, 1]
    assert result.device == "cuda" and not result.fallback and result.metadata["batch"]["oom_retries"] == 2
    assert result.metadata["overlap_io"] is True  # the GPU default: decode and encode on threads


def test_oom_at_one_chunk_falls_back_to_the_cpu_after_halving(tmp_path, monkeypatch):
    eng, log = engine(mode="gpu_allowed", device="cpu", batch_size=4, precision="fp32"), []
    real = fake_gpu(eng, monkeypatch)

    def forward(batch):
        log.append((eng._device.type, batch.shape[0]))
        if eng._device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(eng, "_forward", forward)
    result = eng.separate(music_like(7.5).T.copy(), tmp_path)
    assert log[:3] == [("cuda", 4), ("cuda", 2), ("cuda", 1)]  # halved down to one chunk first
    assert {d for d, _ in log[3:]} == {"cpu"}
    assert result.device == "cpu" and result.fallback and "OutOfMemoryError" in result.fallback_reason


# --- the helper threads: errors and early stops --------------------------------------------

def test_prefetched_raises_the_producers_error_in_order():
    def items():
        yield 1
        yield 2
        raise ValueError("decode failed")

    got = []
    with pytest.raises(ValueError, match="decode failed"):
        for item in prefetched(items(), 1):
            got.append(item)
    assert got == [1, 2]


def test_prefetched_stops_its_producer_when_the_consumer_stops():
    closed = threading.Event()

    def items():
        try:
            for i in range(10**9):
                yield i
        finally:
            closed.set()

    gen = prefetched(items(), 2)
    assert next(gen) == 0
    gen.close()
    assert closed.wait(5) and not [t for t in threading.enumerate() if t.name == "locoserve-decode"]


def test_a_failed_write_on_the_encoding_thread_fails_the_job_and_removes_the_stems(tmp_path, monkeypatch):
    real, calls = StemSink.write, [0]

    def write(self, x):
        calls[0] += 1
        if calls[0] == 7:
            raise OSError("disk full")
        return real(self, x)

    monkeypatch.setattr(StemSink, "write", write)
    with pytest.raises(OSError, match="disk full"):
        engine(batch_size=2, overlap_io=True).separate(music_like(7.5).T.copy(), tmp_path)
    assert not list(tmp_path.glob("*.wav"))
    assert not [t for t in threading.enumerate() if t.name.startswith("locoserve-")]


def test_a_cancelled_job_stops_the_helper_threads(tmp_path):
    class Cancelled(Exception):
        pass

    def progress(done, total):
        if done == 2:
            raise Cancelled()

    with pytest.raises(Cancelled):
        engine(batch_size=1, overlap_io=True).separate(music_like(7.5).T.copy(), tmp_path, progress=progress)
    assert not list(tmp_path.glob("*.wav"))
    assert not [t for t in threading.enumerate() if t.name.startswith("locoserve-")]


def test_segment_writer_never_blocks_after_a_failure():
    def write(_):
        raise OSError("gone")

    w = SegmentWriter(write, threaded=True, depth=1)
    w.put(np.zeros(1))
    with pytest.raises(OSError):
        for _ in range(50):  # would hang on a full queue if the failed writer stopped draining
            w.put(np.zeros(1))
    w.close(discard=True)
