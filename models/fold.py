"""Fold a finer-stemmed checkpoint into a coarser variant without training.

The CPU networks decode each stem with a linear output layer (no GLU), so a stem's complex
mask is linear in the shared hidden features: the mask of a sum of stems is the sum of their
masks, and summing the output layer's slices gives a 2-stem network whose vocals are exactly
the 5-stem vocals and whose instrumental is exactly the sum of the other four. It is the
best starting point for the 2-stem model: every tensor carries over, nothing is re-learned.
"""

from __future__ import annotations

import torch

from .bslocoformer import CHANNELS, RE_IM, BSLocoformer
from .checkpoint import Checkpoint
from .config import ModelConfig
from .stem_map import composition


class FoldError(ValueError):
    pass


def fold_state(state: dict[str, torch.Tensor], source: ModelConfig,
               stems: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """`source`'s weights with every band group's output layer summed into `stems`."""
    if source.decoder_glu:
        raise FoldError("a GLU decoder's masks are not linear in its output layer; it cannot be folded")
    parts = composition(stems, source.stems)
    n_src = len(source.stems)
    out = dict(state)
    for (count, width), i in zip(source.bands, range(len(source.bands))):
        for kind in ("weight", "bias"):
            key = f"groups.{i}.dec_out.{kind}"
            t = state[key].float()  # fp16 checkpoints: sum in full precision
            lead = t.shape[:-1]  # (count, hidden) for the weight, (count,) for the bias
            per_stem = t.reshape(*lead, width, n_src, CHANNELS * RE_IM)
            folded = torch.stack([per_stem[..., list(idx), :].sum(dim=-2) for idx in parts], dim=-2)
            out[key] = folded.reshape(*lead, width * len(stems) * CHANNELS * RE_IM)
    return out


def fold_into(source: Checkpoint, target: ModelConfig) -> BSLocoformer:
    """A `target` network holding `source`'s weights folded into `target`'s stems."""
    mine = source.config.to_dict() | {"variant": target.variant, "stems": list(target.stems)}
    theirs = target.to_dict()
    differ = sorted(k for k in theirs if theirs[k] != mine.get(k) and k != "dropout")
    if differ:
        raise FoldError(f"{source.path.name} has another network shape than {target.variant}/{target.size}: "
                        + ", ".join(differ))
    model = BSLocoformer(target)
    model.load_state_dict(fold_state(source.state_dict, source.config, target.stems))
    return model
