"""Model per device (issue 11, point 2): which size and checkpoint a device runs, the engine's
choice and its CPU fallback, FiveStem's settings, and what the job's metadata says.

A GPU is pretended only where marked FAKE (no GPU on this machine); on a real one:
tests/test_gpu.py (`pytest -m gpu`)."""

from pathlib import Path

import pytest
import torch
import yaml

from audio_fixtures import music_like
from models.bslocoformer import BSLocoformer
from models.checkpoint import SizeChoice, save_checkpoint, size_for_device
from models.config import load_config
from models.device import DeviceChoice
from models.engine import EngineError, SeparationEngine

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)
ROOT = Path(__file__).resolve().parents[1]


def shipped(*names):
    return lambda variant, size: Path(f"/ckpt/{variant}-{size}.pt") if f"{variant}-{size}" in names else None


@pytest.mark.parametrize("device,files,expected", [
    ("cuda", ("5stem-gpu", "5stem-cpu"), SizeChoice("gpu", Path("/ckpt/5stem-gpu.pt"))),
    ("cpu", ("5stem-gpu", "5stem-cpu"), SizeChoice("cpu", Path("/ckpt/5stem-cpu.pt"))),
    ("cuda", ("5stem-cpu",), SizeChoice("cpu", Path("/ckpt/5stem-cpu.pt"),
                                        "no 5stem-gpu.pt checkpoint: the cpu-size network runs on the GPU")),
    ("cpu", ("5stem-gpu",), SizeChoice("cpu", None)),  # never the GPU network on a CPU: the engine refuses
    ("cuda", (), SizeChoice("gpu", None)),
])
def test_size_for_device(device, files, expected):
    assert size_for_device("5stem", device, find=shipped(*files)) == expected


def test_random_weights_take_the_devices_own_size():
    assert size_for_device("5stem", "cuda", random_weights=True, find=shipped()) == SizeChoice("gpu", None)
    assert size_for_device("5stem", "cpu", random_weights=True, find=shipped()) == SizeChoice("cpu", None)


def test_the_shipped_checkpoints_today():
    # 5stem-gpu.pt is not trained yet: a GPU replica runs 5stem-cpu.pt and says so
    pick = size_for_device("5stem", "cuda")
    assert pick.path is not None and pick.path.name == f"5stem-{pick.size}.pt"
    if pick.size == "cpu":
        assert "5stem-gpu.pt" in pick.note
    assert size_for_device("5stem", "cpu").path.name == "5stem-cpu.pt"


@pytest.fixture
def tiny_checkpoints(tmp_path, monkeypatch):
    """A checkpoint folder with tiny 5stem-cpu and 5stem-gpu networks (tests must not touch the real one)."""
    for size in ("cpu", "gpu"):
        torch.manual_seed(3)
        save_checkpoint(tmp_path / f"5stem-{size}.pt", BSLocoformer(load_config("5stem", size, **TINY)), {})
    monkeypatch.setattr("models.checkpoint.CHECKPOINT_DIR", tmp_path)
    return tmp_path


def tiny_engine(**kw):
    return SeparationEngine("5stem", chunk_seconds=2.0, overlap_seconds=0.25, config_overrides=TINY, **kw)


def test_engine_on_a_cpu_loads_the_cpu_size_and_says_so(tiny_checkpoints, tmp_path):
    eng = tiny_engine(mode="gpu_allowed", device="cpu", size="auto")
    meta = eng.separate(music_like(1.0).T.copy(), tmp_path / "out").metadata
    assert (meta["size"], meta["checkpoint"], meta["size_note"]) == ("cpu", "5stem-cpu.pt", None)
    assert meta["device"] == "cpu" and meta["weights_sha256"] == eng.weights_sha256 != "random"


def test_engine_without_any_checkpoint_for_its_device_refuses(tiny_checkpoints):
    (tiny_checkpoints / "5stem-cpu.pt").unlink()
    with pytest.raises(EngineError, match="5stem/cpu"):
        tiny_engine(mode="gpu_allowed", device="cpu", size="auto")


def test_a_gpu_job_falling_back_runs_the_cpu_size_network(tiny_checkpoints, tmp_path, monkeypatch):
    eng = tiny_engine(mode="gpu_allowed", device="cpu", size="auto", batch_size=2, precision="fp32")
    # FAKE: the engine as built on a GPU (gpu-size network, CUDA choice); tensors stay on the CPU
    eng.loaded = eng._load("gpu", tiny_checkpoints / "5stem-gpu.pt")
    eng.choice = DeviceChoice(torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "fake GPU")
    ran = []
    real = eng._forward

    def forward(batch):
        ran.append((eng._device.type, eng._active.size))
        if eng._device.type == "cuda":
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(batch)

    monkeypatch.setattr(eng, "_forward", forward)
    result = eng.separate(music_like(5.0).T.copy(), tmp_path / "out")  # 2 full chunks, a short one
    assert set(ran[:2]) == {("cuda", "gpu")} and set(ran[2:]) == {("cpu", "cpu")}
    meta = result.metadata
    assert result.fallback and (meta["size"], meta["checkpoint"]) == ("cpu", "5stem-cpu.pt")
    # no CUDA in this build: the device is given up and the engine keeps the cpu-size network
    assert eng.choice.device.type == "cpu" and eng.loaded.size == "cpu"


def test_five_stem_replica_goes_by_device_and_two_stem_stays_cpu_size(tmp_path):
    from serve_app.deployments import FiveStem, TwoStem

    conf = dict(random_weights=True, model_overrides=TINY, data_dir=str(tmp_path),
                database_url=f"sqlite:///{tmp_path / 'db.sqlite'}", chunk_seconds=2.0, overlap_seconds=0.25)
    five = FiveStem.func_or_class(conf).engines["5stem"]
    assert five._per_device and five.loaded.size == "cpu"  # no GPU here: the cpu size
    two = TwoStem.func_or_class(conf).engines["2stem"]
    assert not two._per_device and two.loaded.size == "cpu"
    fixed = FiveStem.func_or_class(conf | {"five_stem_size": "gpu"}).engines["5stem"]
    assert fixed.loaded.size == "gpu" and not fixed._per_device  # a size named is a size run anywhere
    assert FiveStem.func_or_class(conf | {"batch_size": 3}).engines["5stem"].batch_size == 3


def test_cluster_config_runs_five_stem_by_device(tmp_path, monkeypatch):
    from serve_app.settings import Settings

    args = yaml.safe_load((ROOT / "configs" / "cluster.yaml").read_text())["applications"][0]["args"]
    assert args["five_stem_device"] == "gpu" and args["five_stem_size"] == "auto"
    monkeypatch.setenv("LOCOSERVE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/locoserve")
    s = Settings(**args)
    assert s.five_stem_size == "auto" and s.batch_size is None and s.max_batch >= 1
