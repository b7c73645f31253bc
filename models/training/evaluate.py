"""Evaluation through the serving engine: clip → SeparationEngine.separate → files → metrics.

For every test clip the mixture (the exact sum of its stems) goes through the same chunked,
post-conditioned engine path that serves users; the written stems are read back and scored
against the references. Baselines on the same clips: the mixture itself as every stem's
estimate (input SDR) and the oracle ideal ratio masks (p = 1 and 2).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from ..engine import SeparationEngine
from .corpus import STEMS, clips
from .dataset import _targets
from . import metrics


SPLIT_TITLES = {"test": "held-out test set (held-out seeds, speakers, voices, kits and recordings)",
                "test-real": "real-sourced test set (held-out real recordings only)"}


def splits_present(data: Path, kind: str) -> list[str]:
    return [s for s in SPLIT_TITLES if clips(Path(data) / kind / s)]


def evaluate(engine: SeparationEngine, data: Path, limit: int | None = None, progress=None,
             split: str = "test") -> dict:
    kind = "speech" if engine.config.variant == "speech" else "music"
    folder = Path(data) / kind / split if (Path(data) / kind / split).exists() else Path(data)
    clip_dirs = clips(folder)[:limit]
    if not clip_dirs:
        raise FileNotFoundError(f"no test clips under {folder}")
    outputs, cfg = engine.stems, engine.config
    rows = {s: {k: [] for k in ("input", "model", "irm1", "irm2", "si_input", "si_model", "bss_model")}
            for s in outputs}
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for i, clip in enumerate(clip_dirs):
            stems = np.stack([sf.read(clip / f"{s}.flac", dtype="float32", always_2d=True)[0].T
                              for s in STEMS[kind]])
            refs = _targets(stems, STEMS[kind], outputs)
            mix = refs.sum(0)
            result = engine.separate(mix, Path(tmp) / f"{i}")
            ests = np.stack([sf.read(result.stems[s], dtype="float32", always_2d=True)[0].T for s in outputs])
            irm = {p: metrics.oracle_irm(refs, cfg.n_fft, cfg.hop, p) for p in (1, 2)}
            bss = metrics.bss_sdr(refs, ests)
            for j, s in enumerate(outputs):
                if np.sum(refs[j] ** 2) < 1e-10:
                    continue  # a silent reference has no SDR
                r = rows[s]
                r["input"].append(metrics.usdr(refs[j], mix))
                r["model"].append(metrics.usdr(refs[j], ests[j]))
                r["irm1"].append(metrics.usdr(refs[j], irm[1][j]))
                r["irm2"].append(metrics.usdr(refs[j], irm[2][j]))
                r["si_input"].append(metrics.si_sdr(refs[j], mix))
                r["si_model"].append(metrics.si_sdr(refs[j], ests[j]))
                r["bss_model"].append(float(bss[j]))
            if progress:
                progress(i + 1, len(clip_dirs))
    table = {}
    for s, r in rows.items():
        mean = {k: float(np.nanmean(v)) for k, v in r.items()}
        irm_best = max(mean["irm1"], mean["irm2"])
        table[s] = {
            "clips": len(r["model"]), **{k: round(v, 2) for k, v in mean.items()},
            "model_median": round(float(np.median(r["model"])), 2),
            "improvement": round(mean["model"] - mean["input"], 2),
            "si_improvement": round(mean["si_model"] - mean["si_input"], 2),
            "irm_improvement": round(irm_best - mean["input"], 2),
            "share_of_irm": round((mean["model"] - mean["input"]) / (irm_best - mean["input"]), 3),
        }
    return {"variant": cfg.variant, "size": cfg.size, "split": split, "weights_sha256": engine.weights_sha256,
            "random_weights": engine.random_weights, "shifts": engine.shifts, "data": str(folder),
            "clips": len(clip_dirs),
            "seconds": round(time.monotonic() - started, 1), "stems": table,
            "average_improvement": round(float(np.mean([t["improvement"] for t in table.values()])), 2)}


def markdown(report: dict) -> str:
    lines = [f"{report['variant']}/{report['size']} on {report['clips']} held-out clips "
             f"(`{report['data']}`), weights sha256 `{report['weights_sha256'][:16]}…`"
             + (f", {report['shifts']} shifts per chunk" if report.get("shifts", 1) > 1 else ""), "",
             "| stem | input SDR | model SDR | improvement | oracle IRM SDR (p=1 / p=2) | share of IRM gain "
             "| BSS-eval SDR | SI-SDR | SI-SDR improvement |",
             "|---|---|---|---|---|---|---|---|---|"]
    for s, t in report["stems"].items():
        lines.append(f"| {s} | {t['input']:.2f} | {t['model']:.2f} | **{t['improvement']:+.2f}** | "
                     f"{t['irm1']:.2f} / {t['irm2']:.2f} | {t['share_of_irm']:.0%} | {t['bss_model']:.2f} | "
                     f"{t['si_model']:.2f} | {t['si_improvement']:+.2f} |")
    lines.append(f"\nAverage SDR improvement: **{report['average_improvement']:+.2f} dB** "
                 f"(SDR = whole-clip 10·log10(‖s‖²/‖s−ŝ‖²), mean over clips, dB).")
    return "\n".join(lines)


def write(report: dict, out: Path) -> None:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    out.with_suffix(".md").write_text(markdown(report) + "\n")
