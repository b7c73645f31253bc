"""Shipped checkpoints: every card names a checkpoint that loads through the engine, matches
the card's SHA-256, and separates a held-out clip with a positive SDR improvement per stem
(a regression guard; the quality claims are the cards' evaluation tables)."""

import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from models.checkpoint import CHECKPOINT_DIR, sha256_file
from models.engine import SeparationEngine
from models.training import metrics

CARDS = sorted(CHECKPOINT_DIR.glob("*.md"))
GUARD = Path(__file__).parent / "data"


def test_every_shipped_variant_has_a_card():
    assert {p.stem for p in CHECKPOINT_DIR.glob("*.pt")} == {p.stem for p in CARDS}
    # the service loads these three by default; without them it refuses to start
    assert {"2stem-cpu", "5stem-cpu", "speech-cpu"} <= {p.stem for p in CARDS}


@pytest.mark.parametrize("card", CARDS, ids=[c.stem for c in CARDS])
def test_shipped_checkpoint(card, tmp_path):
    variant, size = card.stem.rsplit("-", 1)
    ckpt = card.with_suffix(".pt")
    stated = re.search(r"SHA-256: `([0-9a-f]{64})`", card.read_text()).group(1)
    assert sha256_file(ckpt) == stated
    engine = SeparationEngine(variant, size=size, threads=1)
    assert engine.weights_sha256 == stated and not engine.random_weights
    clip = GUARD / f"guard-{variant}"
    refs = np.stack([sf.read(clip / f"{s}.flac", dtype="float32")[0].T for s in engine.stems])
    mix = refs.sum(0)
    result = engine.separate(mix, tmp_path)
    for i, stem in enumerate(engine.stems):
        est = sf.read(result.stems[stem], dtype="float32")[0].T
        gain = metrics.usdr(refs[i], est) - metrics.usdr(refs[i], mix)
        assert gain > 0, f"{variant}/{stem}: SDR improvement {gain:.2f} dB"
