"""Checkpoint cards: what a shipped checkpoint is, how it was made and how well it does.

A card is written next to its checkpoint (`<variant>-<size>.md`) from the checkpoint's own
`training` record and an evaluation report, so the numbers in it are the ones measured.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..checkpoint import load_checkpoint
from ..bslocoformer import BSLocoformer, count_parameters
from .evaluate import SPLIT_TITLES, markdown


def write_card(checkpoint: Path, reports: dict[str, dict], command: str, notes: str = "") -> Path:
    """`reports`: one evaluation report per test split."""
    ckpt = load_checkpoint(checkpoint)
    t, cfg = ckpt.training, ckpt.config
    params = count_parameters(BSLocoformer(cfg))
    lines = [
        f"# {cfg.variant} / {cfg.size}: BS-Locoformer, {params / 1e6:.2f} M parameters",
        "",
        f"- File: `{checkpoint.name}`, SHA-256: `{ckpt.sha256}`",
        f"- Stems (output order): {', '.join(cfg.stems)}",
        f"- Network: n_fft {cfg.n_fft}, hop {cfg.hop}, {cfg.num_bands} bands, width {cfg.dim}, {cfg.heads} heads, "
        f"{cfg.blocks} blocks, FFN {cfg.ffn_hidden}, kernels {cfg.kernel_freq}/{cfg.kernel_time}",
        f"- Weights stored as float16 (loaded as float32)",
        "",
        "## Training",
        "",
        f"- Data: {t.get('data')}; {t.get('clips')} clips, {t.get('validation')}",
        f"- Steps: {t.get('steps')}, batch {t.get('config', {}).get('batch')} × {t.get('config', {}).get('seconds')} s, "
        f"AdamW lr {t.get('config', {}).get('lr')} (warm-up {t.get('config', {}).get('warmup')}, stable, "
        f"linear decay over the last 20 %), EMA {t.get('config', {}).get('ema')}, "
        f"gradient clip {t.get('config', {}).get('clip_grad')}",
        f"- Seed: {t.get('config', {}).get('seed')}",
        f"- Device: {t.get('device')} ({t.get('torch_threads')} torch thread(s)); wall time {t.get('wall_hours')} h "
        f"of training steps",
    ]
    if t.get("note"):
        lines.append(f"- {t['note']}")
    for split, report in reports.items():
        lines += ["", f"## Evaluation: {SPLIT_TITLES.get(split, split)}, through the serving engine", "",
                  markdown(report)]
    lines += ["", f"Measured with: `{command}`"]
    if notes:
        lines += ["", notes]
    path = checkpoint.with_suffix(".md")
    path.write_text("\n".join(lines) + "\n")
    checkpoint.with_suffix(".eval.json").write_text(json.dumps(reports, indent=2) + "\n")
    return path
