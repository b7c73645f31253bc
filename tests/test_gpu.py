"""On a real CUDA device (issue 11): device choice and the network per device, batching equal to
sequential processing, the batch sized from free memory, and the OOM retry, both injected and
real (a per-process memory cap). `pytest -m gpu`; skipped where no CUDA device is visible.

Not yet run on a GPU: no GPU machine was available when these were written (see README)."""

import numpy as np
import pytest
import soundfile as sf
import torch

from audio_fixtures import music_like
from models.checkpoint import default_checkpoint
from models.device import choose_device
from models.engine import SeparationEngine

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device is visible")]

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)


def scramble_masks(model):
    """Random mask weights, so that the stems depend on the network (see test_batching.py)."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for g in model.groups:
            g.dec_out.weight.copy_((torch.randn(g.dec_out.weight.shape, generator=gen) * 0.3).to(g.dec_out.weight))


def gpu_engine(**kw):
    kw.setdefault("random_weights", True)
    kw.setdefault("config_overrides", TINY)
    eng = SeparationEngine("5stem", mode="gpu_allowed", device="cuda", chunk_seconds=2.0, overlap_seconds=0.25, **kw)
    scramble_masks(eng.model)
    return eng


def stems_of(result):
    return {name: sf.read(path, dtype="float32", always_2d=True)[0].T for name, path in result.stems.items()}


def rel_rms(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))


def test_device_choice_and_the_network_per_device(tmp_path):
    choice = choose_device("gpu_allowed", "auto")
    assert choice.device.type == "cuda" and not choice.fallback
    eng = SeparationEngine("5stem", mode="gpu_allowed", device="auto", size="auto")  # as FiveStem builds it
    meta = eng.separate(music_like(3.0).T.copy(), tmp_path).metadata
    assert meta["device_type"] == "cuda" and not meta["fallback"]
    if default_checkpoint("5stem", "gpu"):
        assert (meta["size"], meta["checkpoint"], meta["size_note"]) == ("gpu", "5stem-gpu.pt", None)
    else:  # until 5stem-gpu.pt ships: the cpu-size network on the GPU, said so
        assert (meta["size"], meta["checkpoint"]) == ("cpu", "5stem-cpu.pt") and "5stem-gpu.pt" in meta["size_note"]
    assert meta["precision"] == ("bf16-autocast" if torch.cuda.is_bf16_supported() else "fp32")
    assert meta["overlap_io"] is True and meta["batch"]["size"] >= 1


@pytest.mark.parametrize("precision,tolerance", [("fp32", 1e-4), ("bf16", 2e-2)])
def test_batched_equals_sequential_on_cuda(tmp_path, precision, tolerance):
    x = music_like(9.25).T.copy()  # 5 full chunks and a short last one
    ref = stems_of(gpu_engine(batch_size=1, precision=precision).separate(x, tmp_path / "seq"))
    result = gpu_engine(batch_size=4, precision=precision).separate(x, tmp_path / "b4")
    assert result.metadata["batch"]["largest"] == 4
    for name, y in stems_of(result).items():
        assert rel_rms(y, ref[name]) < tolerance, name


def test_gpu_output_is_close_to_the_cpu(tmp_path):
    x = music_like(5.0).T.copy()
    cpu = SeparationEngine("5stem", random_weights=True, config_overrides=TINY, chunk_seconds=2.0,
                           overlap_seconds=0.25)
    scramble_masks(cpu.model)
    ref = stems_of(cpu.separate(x, tmp_path / "cpu"))
    for name, y in stems_of(gpu_engine(precision="fp32").separate(x, tmp_path / "gpu")).items():
        assert rel_rms(y, ref[name]) < 1e-3, name


def test_batch_is_sized_from_free_memory(tmp_path):
    eng = gpu_engine(max_batch=6)
    size = eng.batch_for_job()
    assert 1 <= size <= 6 and eng.loaded.chunk_bytes > 0
    free, _ = torch.cuda.mem_get_info()
    assert size == 6 or size * eng.loaded.chunk_bytes <= free  # never more than fits


def test_injected_oom_halves_the_batch_on_cuda(tmp_path, monkeypatch):
    x = music_like(9.25).T.copy()
    ref = stems_of(gpu_engine(batch_size=1, precision="fp32").separate(x, tmp_path / "seq"))
    eng, sizes = gpu_engine(batch_size=4, precision="fp32"), []
    real = eng._forward

    def forward(batch):
        sizes.append(batch.shape[0])
        if batch.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(batch)

    monkeypatch.setattr(eng, "_forward", forward)
    result = eng.separate(x, tmp_path / "oom")
    assert sizes[:3] == [4, 2, 2] and result.device.startswith("cuda") and not result.fallback
    for name, y in stems_of(result).items():
        assert rel_rms(y, ref[name]) < 1e-4, name


def test_real_oom_under_a_memory_cap_halves_the_batch_and_stays_on_cuda(tmp_path):
    """A real torch.OutOfMemoryError: the process may use what the engine holds plus ~2.5 chunks'
    working memory, and the batch asked for is 8 chunks of the gpu-size network."""
    eng = SeparationEngine("5stem", mode="gpu_allowed", device="cuda", size="gpu", random_weights=True,
                           chunk_seconds=6.0, overlap_seconds=0.5, max_batch=8)
    per_chunk = eng._chunk_bytes()
    eng.batch_size = 8
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.empty_cache()
    cap = torch.cuda.memory_allocated() + 2.5 * per_chunk
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total))
    try:
        result = eng.separate(music_like(60.0).T.copy(), tmp_path)  # 11 full 6 s chunks and a last one
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0)
    batch = result.metadata["batch"]
    assert batch["oom_retries"] >= 1 and batch["largest"] <= 2
    assert result.device.startswith("cuda") and not result.fallback
