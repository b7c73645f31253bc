"""Passes per chunk for the speech model, compared on tuning clips no reported figure uses.

Each clip's mixture goes through the serving engine once per combination of passes (the
network's own output, delayed by a fraction of an STFT hop, polarity inverted, and their
means), every pass through the engine's own chunking and post-conditioning, so "two" is what
the service runs by default (`shifts: {speech: 2}`, bit for bit). The network runs once per
distinct pass and chunk; the combinations reuse those outputs.

The clips: `locoserve data synth --kind speech --out tune --train 0 --test 180 --test-real 180`
renders 180 clips per test split; the first 60 are the reported `test`/`test-real` sets (the
same seeds), so the default `--start 60` measures on the other 120, which were rendered only
to choose on. Also prints what mixing some of the input back into the served estimate does
(DFN's attenuation limit), and, for each clip the served estimate makes worse by over 1 dB,
how much of the voice and of the noise it keeps (least-squares amplitudes: est ≈ a·voice +
b·noise).

    python benchmarks/speech_shifts.py --data tune [--checkpoint PATH] [--start 60] [--limit N]
        [--combos one,two] [--splits test-real] [--threads 1] [--json OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.engine import SeparationEngine  # noqa: E402
from models.shifts import delayed_forward  # noqa: E402
from models.training.metrics import si_sdr  # noqa: E402

Pass = tuple[int, int]  # (delay as a fraction of the hop in quarters, polarity)

# name → passes; a pass is (quarter-hops of delay, polarity). "two" is the served default.
COMBOS: dict[str, tuple[Pass, ...]] = {
    "one": ((0, 1),),
    "half-hop": ((2, 1),),
    "inverted": ((0, -1),),
    "two": ((0, 1), (2, 1)),
    "three": ((0, 1), (2, 1), (0, -1)),
    "four": ((0, 1), (1, 1), (2, 1), (3, 1)),
}
MIX_BACK = (0.01, 0.03, 0.05, 0.1, 0.2, 0.3)


class PassEngine(SeparationEngine):
    """The serving engine with a chosen set of passes per chunk instead of its `shifts`.

    Each distinct pass of a chunk runs once (cached by the chunk's bytes), so measuring six
    combinations costs five network runs per chunk, not eleven."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, shifts=1, **kwargs)
        self.passes: tuple[Pass, ...] = COMBOS["one"]
        self._cache: dict[tuple[bytes, Pass], np.ndarray] = {}

    def forget(self) -> None:
        self._cache.clear()

    def _pass(self, batch: np.ndarray, p: Pass) -> np.ndarray:
        key = (hashlib.sha1(batch.tobytes()).digest(), p)
        if key not in self._cache:
            k, sign = p[0] * self._active.model.cfg.hop // 4, np.float32(p[1])
            y = delayed_forward(lambda b: self._forward_once(b * sign), batch, k)
            self._cache[key] = y if sign == 1 else -y
        return self._cache[key]

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        # the same sum, in the same order, as models/shifts.shift_averaged
        if len(self.passes) == 1:
            return self._pass(batch, self.passes[0])
        return sum(self._pass(batch, p) for p in self.passes) / np.float32(len(self.passes))


def _estimate(engine: PassEngine, mix: np.ndarray, tmp: Path) -> np.ndarray:
    result = engine.separate(np.stack([mix, mix]).astype(np.float32), tmp)
    return sf.read(result.stems["speech"], dtype="float64", always_2d=True)[0].mean(axis=1)


def kept(est: np.ndarray, voice: np.ndarray, noise: np.ndarray) -> tuple[float, float]:
    """Least-squares amplitudes (a, b) of est ≈ a·voice + b·noise: how much of each is left."""
    basis = np.stack([voice, noise], axis=1)
    (a, b), *_ = np.linalg.lstsq(basis, est, rcond=None)
    return float(a), float(b)


def measure(data: Path, checkpoint: str | None, start: int, limit: int | None, combos: list[str],
            threads: int, splits: tuple[str, ...] = ("test", "test-real")) -> dict:
    engine = PassEngine("speech", checkpoint, threads=threads)
    report: dict = {"weights_sha256": engine.weights_sha256, "start": start, "combos": combos, "sets": {}}
    for split in splits:
        clips = sorted(p.parent for p in (data / "speech" / split).glob("*/meta.json"))[start:]
        clips = clips[:limit]
        if not clips:
            print(f"no clips from {start} under {data / 'speech' / split}: render them with "
                  "`locoserve data synth --kind speech --train 0 --test 180 --test-real 180`")
            continue
        rows = []
        with tempfile.TemporaryDirectory() as tmp:
            for i, clip in enumerate(clips):
                meta = json.loads((clip / "meta.json").read_text())
                s = sf.read(clip / "speech.flac", dtype="float64", always_2d=True)[0][:, 0]
                n = sf.read(clip / "noise.flac", dtype="float64", always_2d=True)[0][:, 0]
                mix = s + n
                row = {"clip": clip.name, "snr": meta.get("snr_db"), "noise": meta.get("noise"),
                       "input": si_sdr(s, mix), "ours": {}}
                engine.forget()
                for name in combos:
                    engine.passes = COMBOS[name]
                    est = _estimate(engine, mix, Path(tmp) / f"{i}-{name}")
                    row["ours"][name] = si_sdr(s, est)
                    if name == "two":
                        row["mix_back"] = {str(a): si_sdr(s, (1 - a) * est + a * mix) for a in MIX_BACK}
                        row["kept"] = kept(est, s, n)
                rows.append(row)
        report["sets"][split] = rows
    return report


def _cell(imps: list[float]) -> str:
    return f"{np.mean(imps):+.2f} ({np.median(imps):+.2f}, {sum(i < -1 for i in imps)})"


def tables(report: dict) -> list[str]:
    combos, first = report["combos"], report["start"]
    out = [f"speech checkpoint sha256 {report['weights_sha256'][:16]}…; clips from index {first}",
           "SI-SDR improvement: mean (median, clips worse than -1 dB)", "",
           "| set | " + " | ".join(combos) + " |", "|---" * (len(combos) + 1) + "|"]
    for split, rows in report["sets"].items():
        cells = [_cell([r["ours"][c] - r["input"] for r in rows]) for c in combos]
        out.append(f"| {split} ({len(rows)}, from {first}) | " + " | ".join(cells) + " |")
    for split, rows in report["sets"].items():
        if "mix_back" not in rows[0]:
            continue
        out += ["", f"{split}: the served estimate with a share of the input mixed back, mean improvement"]
        served = np.mean([r["ours"]["two"] - r["input"] for r in rows])
        shares = [f"0 %: {served:+.2f}"] + [
            f"{float(a) * 100:g} %: {np.mean([r['mix_back'][a] - r['input'] for r in rows]):+.2f}"
            for a in rows[0]["mix_back"]]
        out.append("  " + ", ".join(shares))
        worse = [r for r in rows if r["ours"]["two"] - r["input"] < -1]
        if worse:
            out.append(f"{split}: clips the served estimate makes worse by over 1 dB, and what it keeps")
        for r in worse:
            a, b = r["kept"]
            band = "clean" if r["snr"] is None else f"{r['snr']:+.0f} dB"
            out.append(f"  {r['clip']} {band} {'+'.join(r['noise'] or [])}: "
                       f"{r['ours']['two'] - r['input']:+.2f} dB, voice x{a:.2f}, noise x{b:.2f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="tune")
    p.add_argument("--checkpoint")
    p.add_argument("--start", type=int, default=60, help="first clip index of each split (default 60: "
                   "past the reported sets)")
    p.add_argument("--limit", type=int)
    p.add_argument("--combos", default=",".join(COMBOS), help=f"comma-separated, of {', '.join(COMBOS)}")
    p.add_argument("--splits", default="test,test-real", help="comma-separated: test, test-real")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", help="also write the per-clip rows here")
    p.add_argument("--from-json", help="print the tables of a report written by --json, running nothing")
    args = p.parse_args()
    if args.from_json:
        report = json.loads(Path(args.from_json).read_text())
    else:
        combos = args.combos.split(",")
        unknown = [c for c in combos if c not in COMBOS]
        if unknown:
            p.error(f"unknown combos {unknown}; choose from {', '.join(COMBOS)}")
        report = measure(Path(args.data), args.checkpoint, args.start, args.limit, combos, args.threads,
                         tuple(args.splits.split(",")))
    print("\n".join(tables(report)))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
