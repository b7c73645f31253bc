"""Folding a 5-stem checkpoint into the 2-stem variant: the same separation, no training."""

import pytest
import torch

from models.bslocoformer import BSLocoformer
from models.checkpoint import load_checkpoint, save_checkpoint
from models.config import load_config
from models.fold import FoldError, fold_into
from models.training.train import _init_from

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)


def _trained_looking(variant: str, path, **shape) -> BSLocoformer:
    """A network whose decoders are not at their even-split start, saved as a checkpoint."""
    torch.manual_seed(0)
    model = BSLocoformer(load_config(variant, "cpu", **shape))
    with torch.no_grad():
        for g in model.groups:
            g.dec_out.weight.normal_(0, 0.3)
            g.dec_out.bias.normal_(0.2, 0.3)
    save_checkpoint(path, model, {"steps": 1})
    return model


def _wave() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.randn(1, 2, 44100) * 0.1


def test_folded_two_stem_is_five_stem_vocals_and_the_sum_of_the_rest(tmp_path):
    five = _trained_looking("5stem", tmp_path / "5.pt", **TINY)
    two = fold_into(load_checkpoint(tmp_path / "5.pt"), load_config("2stem", "cpu", **TINY))
    assert two.stems == ("vocals", "instrumental")
    with torch.inference_mode():
        y5, y2 = five(_wave()), two(_wave())
    # fp16 storage of the checkpoint is the only difference
    torch.testing.assert_close(y2[:, 0], y5[:, 0], atol=2e-3, rtol=0)
    torch.testing.assert_close(y2[:, 1], y5[:, 1:].sum(1), atol=2e-3, rtol=0)
    assert (y2[:, 1] - y2[:, 0]).abs().max() > 0.01  # the stems really are different signals


def test_training_init_folds_every_tensor(tmp_path, capsys):
    _trained_looking("5stem", tmp_path / "5.pt", **TINY)
    two = BSLocoformer(load_config("2stem", "cpu", **TINY))
    _init_from(two, str(tmp_path / "5.pt"))
    out = capsys.readouterr().out
    n = len(two.state_dict())
    assert f"initialised {n}/{n} tensors" in out and "(folded)" in out


def test_what_cannot_be_folded_is_refused(tmp_path):
    _trained_looking("speech", tmp_path / "speech.pt", **TINY)
    with pytest.raises(ValueError, match="no stem .vocals. can be made"):
        fold_into(load_checkpoint(tmp_path / "speech.pt"), load_config("2stem", "cpu", **TINY))
    _trained_looking("5stem", tmp_path / "5.pt", **TINY)
    with pytest.raises(FoldError, match="network shape"):
        fold_into(load_checkpoint(tmp_path / "5.pt"), load_config("2stem", "cpu", **(TINY | {"dim": 32})))
    _trained_looking("5stem", tmp_path / "glu.pt", **(TINY | {"decoder_glu": True}))
    with pytest.raises(FoldError, match="GLU"):
        fold_into(load_checkpoint(tmp_path / "glu.pt"), load_config("2stem", "cpu", **(TINY | {"decoder_glu": True})))
