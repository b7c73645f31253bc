"""The network per variant, and checkpoints: round trip, provenance, refusal of mismatches."""

import pytest
import torch

from models.bslocoformer import BSLocoformer, count_parameters
from models.checkpoint import CheckpointError, build_model, check_matches, load_checkpoint, save_checkpoint
from models.config import load_config

TINY = dict(dim=16, attn_dim=16, heads=2, groups=2, ffn_hidden=16, blocks=1, decoder_hidden=16)


@pytest.mark.parametrize("variant,stems,params_m", [
    ("2stem", 2, (4.0, 5.0)), ("5stem", 5, (7.0, 8.5)), ("speech", 2, (4.0, 5.0))])
def test_cpu_sizes_shapes_and_parameters(variant, stems, params_m):
    model = BSLocoformer(load_config(variant, "cpu"))
    lo, hi = params_m
    assert lo * 1e6 < count_parameters(model) < hi * 1e6
    x = torch.randn(1, 2, 44100) * 0.1
    with torch.inference_mode():
        y = model(x)
    assert y.shape == (1, stems, 2, 44100)
    # untrained decoders start at mask 1/S: the stems sum to the input
    torch.testing.assert_close(y.sum(1), x, atol=1e-5, rtol=0)


def test_two_and_five_stem_models_really_differ():
    two, five = (BSLocoformer(load_config(v, "cpu")) for v in ("2stem", "5stem"))
    assert two.groups[0].dec_out.weight.shape[-1] * 5 == five.groups[0].dec_out.weight.shape[-1] * 2


def test_gpu_size_is_larger():
    assert count_parameters(BSLocoformer(load_config("5stem", "gpu"))) > 25e6


def test_odd_lengths():
    model = BSLocoformer(load_config("2stem", "cpu", **TINY)).eval()
    for n in (1, 1023, 4097):
        with torch.inference_mode():
            assert model(torch.zeros(1, 2, n)).shape == (1, 2, 2, n)


def test_checkpoint_round_trip(tmp_path):
    model = BSLocoformer(load_config("5stem", "cpu", **TINY))
    sha = save_checkpoint(tmp_path / "m.pt", model, {"data": "unit test", "steps": 0})
    ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt.sha256 == sha and ckpt.stems == ("vocals", "drums", "bass", "instruments", "fx")
    assert ckpt.training["data"] == "unit test"
    loaded = build_model(ckpt)
    x = torch.randn(1, 2, 8192) * 0.1
    with torch.inference_mode():
        # weights are stored as float16: outputs agree to fp16 precision
        torch.testing.assert_close(loaded(x), model(x), atol=2e-3, rtol=2e-2)


def test_checkpoint_for_another_variant_is_refused(tmp_path):
    save_checkpoint(tmp_path / "two.pt", BSLocoformer(load_config("2stem", "cpu", **TINY)), {})
    ckpt = load_checkpoint(tmp_path / "two.pt")
    with pytest.raises(CheckpointError, match="variant '5stem' needs stems"):
        check_matches(ckpt, load_config("5stem", "cpu", **TINY))
    with pytest.raises(CheckpointError, match="different 2stem/cpu network"):
        check_matches(ckpt, load_config("2stem", "cpu"))


def test_non_checkpoints_are_refused(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")
    torch.save({"weights": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a Locoserve checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
