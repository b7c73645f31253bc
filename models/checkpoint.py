"""Checkpoints: one `torch.save`d dict, loadable with `torch.load(weights_only=True)`.

    {
      "format": "locoserve.checkpoint", "format_version": 1,
      "config":   ModelConfig as a plain dict (builds the network),
      "stems":    ["vocals", ...]  (output order),
      "state_dict": {name: tensor}  (float16 on disk to halve the size; loaded as float32),
      "training": {"data": ..., "seed": ..., "steps": ..., ...}  (plain values only)
    }

Shipped checkpoints live next to this file as `<variant>-<size>.pt`, each with a card
`<variant>-<size>.md`. The engine reports the SHA-256 of the file it loaded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from .bslocoformer import BSLocoformer
from .config import ModelConfig

FORMAT, FORMAT_VERSION = "locoserve.checkpoint", 1
CHECKPOINT_DIR = Path(__file__).resolve().parent / "checkpoints"


class CheckpointError(ValueError):
    pass


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    sha256: str
    config: ModelConfig
    state_dict: dict
    training: dict

    @property
    def stems(self) -> tuple[str, ...]:
        return self.config.stems


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_checkpoint(variant: str, size: str = "cpu") -> Path | None:
    path = CHECKPOINT_DIR / f"{variant}-{size}.pt"
    return path if path.exists() else None


@dataclass(frozen=True)
class SizeChoice:
    """Which network size (and shipped checkpoint) a device runs, and why if not its own."""

    size: str
    path: Path | None  # None: random weights, or no checkpoint at all (the engine refuses)
    note: str | None = None


def size_for_device(variant: str, device_type: str, *, random_weights: bool = False,
                    find: Callable[[str, str], Path | None] = default_checkpoint) -> SizeChoice:
    """A GPU runs the `gpu` size, anything else the `cpu` size. A GPU without a `gpu`-size
    checkpoint runs the `cpu`-size one (still far faster there than on a CPU) rather than
    refusing to start, and says so; random weights (tests, benchmarks) need no file."""
    own = "gpu" if device_type == "cuda" else "cpu"
    if random_weights:
        return SizeChoice(own, None)
    path = find(variant, own)
    if path is not None:
        return SizeChoice(own, path)
    if own == "gpu":
        cpu = find(variant, "cpu")
        if cpu is not None:
            return SizeChoice("cpu", cpu, f"no {variant}-gpu.pt checkpoint: the cpu-size network runs on the GPU")
    return SizeChoice(own, None)


def save_checkpoint(path: str | Path, model: BSLocoformer, training: dict,
                    dtype: torch.dtype = torch.float16) -> str:
    """Write `model` and its provenance; returns the file's SHA-256."""
    state = {k: v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).clone()
             for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "config": model.cfg.to_dict(), "stems": list(model.cfg.stems),
        "state_dict": state, "training": training,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # never leave a half-written checkpoint under the real name
    return sha256_file(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} does not exist") from None
    except Exception as e:
        raise CheckpointError(f"{path} is not a loadable checkpoint: {e}") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a Locoserve checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path} has format version {payload.get('format_version')}, "
                              f"this build reads {FORMAT_VERSION}")
    config = ModelConfig(**payload["config"])
    if tuple(payload["stems"]) != config.stems:
        raise CheckpointError(f"{path}: stems {payload['stems']} disagree with its config {list(config.stems)}")
    return Checkpoint(path, sha256_file(path), config, payload["state_dict"], payload.get("training", {}))


def check_matches(ckpt: Checkpoint, expected: ModelConfig) -> None:
    """Refuse a checkpoint built for another variant, other stems or another network shape."""
    if ckpt.config.variant != expected.variant or ckpt.stems != expected.stems:
        raise CheckpointError(
            f"{ckpt.path.name} is a {ckpt.config.variant!r} checkpoint with stems {list(ckpt.stems)}, "
            f"but variant {expected.variant!r} needs stems {list(expected.stems)}")
    mine, theirs = expected.to_dict(), ckpt.config.to_dict()
    diff = sorted(k for k in mine if mine[k] != theirs.get(k) and k != "dropout")
    if diff:
        raise CheckpointError(
            f"{ckpt.path.name} was trained with a different {expected.variant}/{expected.size} network: "
            + ", ".join(f"{k}={theirs.get(k)!r} (expected {mine[k]!r})" for k in diff))


def build_model(ckpt: Checkpoint) -> BSLocoformer:
    model = BSLocoformer(ckpt.config)
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{ckpt.path.name}: weights do not fit its own config: {e}") from e
    return model
