"""Training loop: remixed stems → BS-Locoformer, capped-SNR loss, AdamW, EMA, resumable.

A run lives in one folder: `state.pt` (model, EMA, optimizer, step, RNG; rewritten every
`save_every` steps and on SIGTERM/SIGINT), `log.jsonl` (one line per logged step) and,
after `export`, a shipping checkpoint in the format of `models/checkpoint.py`.

On CUDA the forward runs under bf16 autocast; on CPU it stays fp32. A file `threads` in the
run folder, if present, sets torch's thread count (read every 20 steps), so a long CPU run
can yield a core to other work and take it back without restarting.
"""

from __future__ import annotations

import json
import signal
import time
from copy import deepcopy
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..bslocoformer import BSLocoformer
from ..checkpoint import build_model, load_checkpoint, save_checkpoint
from ..config import load_config
from ..fold import fold_into
from .dataset import Augment, Remixer, StemStore, augment_for
from .losses import separation_loss

VALIDATION_EVERY = 25  # every 25th clip of the training split is held out for validation


@dataclass
class TrainConfig:
    variant: str
    size: str = "cpu"
    data: str = "corpus"
    musdb: str | None = None
    out: str = "runs/run"
    steps: int = 10000
    batch: int = 4
    seconds: float = 4.0
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup: int = 500
    clip_grad: float = 5.0
    ema: float = 0.999
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None
    log_every: int = 20
    save_every: int = 200
    val_every: int = 1000
    snapshot_every: int = 0  # also export the EMA weights to <out>/ema-<step>.pt (a learning curve)
    init: str | None = None  # start from a checkpoint (its backbone; decoders are re-made if stems differ)
    # Music remixing and loss options, measured in one run (README, "sparse passages"): off by
    # default, as that run bought less leakage on solo recordings for −0.3 dB on full mixes.
    sparse: float = 0.0  # share of examples keeping each stem with probability 1/2 (dataset.Augment)
    gaps: float = 0.0  # chance per stem of a silent stretch (dataset.Augment)
    silent_weight: float = 0.1  # weight of a silent stem's leak in the loss (losses.separation_loss)
    overrides: dict = field(default_factory=dict)  # network fields, for tiny test configs

    @property
    def kind(self) -> str:
        return "speech" if self.variant == "speech" else "music"


DECAY_FRACTION = 0.2


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Warm-up, stable, decay: linear warm-up, the peak rate, then a linear decay to 10 % over
    the last 20 % of the steps. Until the decay starts, a run can be extended on resume
    (`--steps` larger) without a jump in the schedule."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    decay_start = cfg.steps * (1 - DECAY_FRACTION)
    if step < decay_start:
        return cfg.lr
    return cfg.lr * (1 - 0.9 * min(1.0, (step - decay_start) / (cfg.steps - decay_start)))


def _stores(cfg: TrainConfig) -> tuple[StemStore, np.ndarray, np.ndarray]:
    from .corpus import STEMS

    if cfg.musdb:
        store = StemStore.open(Path(cfg.musdb), STEMS["music"], musdb=True)
    else:
        store = StemStore.open(Path(cfg.data) / cfg.kind / "train", STEMS[cfg.kind])
    held_out = np.arange(len(store)) % VALIDATION_EVERY == 0
    return store, np.nonzero(~held_out)[0], np.nonzero(held_out)[0]


def _init_from(model: BSLocoformer, path: str) -> None:
    """Start from another checkpoint: folded into this variant's stems where its decoder allows
    (`models.fold`: every tensor carries over), else every tensor whose name and shape match
    (the backbone of another variant; the decoders start afresh)."""
    ckpt = load_checkpoint(path)
    theirs, how = build_model(ckpt).state_dict(), "matched"
    if ckpt.stems != model.stems:
        try:
            theirs, how = fold_into(ckpt, model.cfg).state_dict(), "folded"
        except ValueError:  # FoldError, or stems that no sum of theirs makes (speech → music)
            pass
    mine = model.state_dict()
    shared = {k: v for k, v in theirs.items() if k in mine and mine[k].shape == v.shape}
    mine.update(shared)
    model.load_state_dict(mine)
    print(f"initialised {len(shared)}/{len(mine)} tensors from {path} ({how})", flush=True)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.dir = Path(cfg.out)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(cfg.device)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.model = BSLocoformer(load_config(cfg.variant, cfg.size, **cfg.overrides)).to(self.device)
        if cfg.init:
            _init_from(self.model, cfg.init)
        self.ema = deepcopy(self.model).eval()
        for p in self.ema.parameters():
            p.requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.wall = 0.0
        store, train_idx, val_idx = _stores(cfg)
        self.store = store
        augment = replace(augment_for(cfg.kind), sparse=cfg.sparse, gaps=cfg.gaps)
        self.remix = Remixer(store, self.model.stems, cfg.seconds, augment, cfg.seed, train_idx)
        # validation: fixed coherent mixtures of held-out clips, no augmentation
        val = Remixer(store, self.model.stems, cfg.seconds,
                      Augment(gain_db=0, dropout=0, coherent=1.0, lowpass=0, polarity=False, swap=False),
                      seed=12345, clips=val_idx)
        self.val = [val.batch(cfg.batch) for _ in range(4)]
        self._stop = False
        if (self.dir / "state.pt").exists():
            self._load()

    def _save(self) -> None:
        state = {"model": self.model.state_dict(), "ema": self.ema.state_dict(), "opt": self.opt.state_dict(),
                 "step": self.step, "wall": self.wall, "rng": self.remix.rng.bit_generator.state,
                 "torch_rng": torch.get_rng_state(), "config": asdict(self.cfg)}
        torch.save(state, self.dir / "state.tmp")
        (self.dir / "state.tmp").replace(self.dir / "state.pt")

    def _load(self) -> None:
        state = torch.load(self.dir / "state.pt", map_location=self.device, weights_only=False)
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["opt"])
        self.step, self.wall = state["step"], state["wall"]
        self.remix.rng.bit_generator.state = state["rng"]
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed {self.dir} at step {self.step}", flush=True)

    def _threads_knob(self) -> None:
        knob = self.dir / "threads"
        if knob.exists():
            try:
                n = int(knob.read_text().strip())
            except ValueError:
                return
            if n != torch.get_num_threads():
                torch.set_num_threads(n)

    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.no_grad()
    def validate(self) -> float:
        losses = []
        for mix, ref in self.val:
            mix_t, ref_t = torch.from_numpy(mix).to(self.device), torch.from_numpy(ref).to(self.device)
            with self._autocast():
                est = self.ema(mix_t)
            # the default weighting, so that validation figures stay comparable across runs
            losses.append(float(separation_loss(est, ref_t, mix_t)))
        return float(np.mean(losses))

    def train_step(self) -> float:
        cfg = self.cfg
        mix, ref = self.remix.batch(cfg.batch)
        mix_t, ref_t = torch.from_numpy(mix).to(self.device), torch.from_numpy(ref).to(self.device)
        for group in self.opt.param_groups:
            group["lr"] = lr_at(self.step, cfg)
        self.model.train()
        with self._autocast():
            est = self.model(mix_t)
        loss = separation_loss(est, ref_t, mix_t, silent_weight=cfg.silent_weight)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.clip_grad)
        self.opt.step()
        with torch.no_grad():
            decay = min(cfg.ema, (1 + self.step) / (10 + self.step))  # short memory while young
            for e, p in zip(self.ema.parameters(), self.model.parameters()):
                e.lerp_(p, 1 - decay)
        self.step += 1
        return float(loss.detach())

    def run(self) -> None:
        cfg = self.cfg
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: setattr(self, "_stop", True))
        log = open(self.dir / "log.jsonl", "a")
        recent, t_log = [], time.monotonic()
        while self.step < cfg.steps and not self._stop:
            t0 = time.monotonic()
            recent.append(self.train_step())
            self.wall += time.monotonic() - t0
            if self.step % 20 == 0:
                self._threads_knob()
            entry = None
            if self.step % cfg.log_every == 0:
                now = time.monotonic()
                entry = {"step": self.step, "loss": round(float(np.mean(recent)), 4),
                         "lr": lr_at(self.step - 1, cfg), "s_per_step": round((now - t_log) / len(recent), 3),
                         "threads": torch.get_num_threads(), "wall_h": round(self.wall / 3600, 3)}
                recent, t_log = [], now
            if self.step % cfg.val_every == 0 or self.step == cfg.steps:
                entry = (entry or {"step": self.step}) | {"val_loss": round(self.validate(), 4)}
            if entry:
                log.write(json.dumps(entry) + "\n")
                log.flush()
                print(json.dumps(entry), flush=True)
            if self.step % cfg.save_every == 0:
                self._save()
            if cfg.snapshot_every and self.step % cfg.snapshot_every == 0 and self.step < cfg.steps:
                self.export(self.dir / f"ema-{self.step}.pt")
        self._save()
        log.close()

    def export(self, path: str | Path, extra: dict | None = None) -> str:
        """Write the EMA weights as a shipping checkpoint; returns its SHA-256."""
        data = (f"MUSDB18-HQ-style folder {self.cfg.musdb}" if self.cfg.musdb else
                f"synthetic {self.cfg.kind} corpus under {self.cfg.data} (models/training/synth, "
                f"seeds from models/training/corpus.py SEEDS['{self.cfg.kind}']['train'])")
        training = {"data": data, "clips": len(self.store), "validation": f"every {VALIDATION_EVERY}th training clip, held out",
                    "steps": self.step, "wall_hours": round(self.wall / 3600, 3), "device": self.device.type,
                    "torch_threads": torch.get_num_threads(),
                    "config": {k: v for k, v in asdict(self.cfg).items() if v is not None},
                    **(extra or {})}
        return save_checkpoint(path, self.ema, training)
