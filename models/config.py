"""Model configuration: a size (the network's shape) plus a variant (its stems), read from YAML."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, model_validator

SAMPLE_RATE = 44100
CHANNELS = 2

Size = Literal["cpu", "gpu"]


def config_dir() -> Path:
    """The repository's `configs/` folder, or `LOCOSERVE_CONFIG_DIR`."""
    env = os.environ.get("LOCOSERVE_CONFIG_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs"


class ModelConfig(BaseModel):
    """Everything needed to build a network; stored verbatim inside checkpoints."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = "bs-locoformer"
    variant: str
    size: str
    stems: tuple[str, ...]
    sample_rate: int = SAMPLE_RATE
    n_fft: int
    hop: int
    bands: tuple[tuple[int, int], ...]
    dim: int
    attn_dim: int
    heads: int
    groups: int
    ffn_hidden: int
    kernel_freq: int
    kernel_time: int
    blocks: int
    decoder_hidden: int
    decoder_glu: bool = False
    dropout: float = 0.0

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        bins = sum(count * width for count, width in self.bands)
        if bins != self.n_fft // 2 + 1:
            raise ValueError(f"bands cover {bins} bins, the STFT has {self.n_fft // 2 + 1}")
        if self.attn_dim % self.heads or (self.attn_dim // self.heads) % 2:
            raise ValueError("attn_dim must split into heads of even size (rotary embedding)")
        if self.dim % self.groups:
            raise ValueError("dim must be divisible by groups")
        if len(set(self.stems)) != len(self.stems) or not self.stems:
            raise ValueError("stems must be distinct and non-empty")
        return self

    @property
    def band_widths(self) -> list[int]:
        return [width for count, width in self.bands for _ in range(count)]

    @property
    def num_bands(self) -> int:
        return sum(count for count, _ in self.bands)

    def to_dict(self) -> dict:
        data = self.model_dump()
        data["stems"] = list(self.stems)
        data["bands"] = [list(b) for b in self.bands]
        return data


@lru_cache(maxsize=4)
def _catalog(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def catalog() -> dict:
    return _catalog(config_dir() / "models.yaml")


def variants() -> list[str]:
    return list(catalog()["variants"])


def load_config(variant: str, size: str = "cpu", **overrides) -> ModelConfig:
    """Resolve `variant` × `size` from configs/models.yaml; `overrides` replace size fields."""
    data = catalog()
    if variant not in data["variants"]:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(data['variants'])}")
    if size not in data["sizes"]:
        raise ValueError(f"unknown size {size!r}; known: {', '.join(data['sizes'])}")
    fields = dict(data["sizes"][size])
    fields.update(overrides)
    return ModelConfig(variant=variant, size=size, stems=tuple(data["variants"][variant]["stems"]), **fields)
