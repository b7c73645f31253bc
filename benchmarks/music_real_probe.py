"""Does a music model know a real voice? Probes built only from held-out real recordings.

The synthetic and real-sourced test sets mix a real speaker's words re-sung by WORLD into
produced songs; a user's upload holds a real voice as it was recorded. These probes isolate
that, from recordings that never reach a training render (held-out speakers, loops, phrases
and patches: `synth/library.py`, `synth/words.py`):

- `a-cappella`: a held-out real speaker alone, as recorded (spoken phrases). A separator users
  trust keeps it in the vocals stem (above −1 dB) and puts little of it elsewhere.
- `a-cappella-sung`: the same speakers re-sung on a melody by the corpus's WORLD singer.
- `no-voice`: held-out recorded drums (a kit, or the held-out loop), instrument phrase and
  bass line, no voice. The vocals stem should stay far below the input (under −25 dB).
- `voice-over-real`: the held-out speaker over that accompaniment, the voice at −5, 0 and
  +5 dB against it: SDR improvement of vocals and of the rest, as `locoserve eval` computes it.

Each clip is a pure function of its seed, so old and new checkpoints meet the same audio.

    python benchmarks/music_real_probe.py --variant 2stem|5stem [--checkpoint PATH] [--clips N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models.training.metrics import usdr  # noqa: E402
from models.training.synth import compose, drumkit, library, sampler, singer, words  # noqa: E402

SECONDS = 10.0
SEED = 7_700_000  # far from every corpus seed (models/training/corpus.py)
VOICE_RATIOS = (-5.0, 0.0, 5.0)  # voice-over-real clip i: voice at VOICE_RATIOS[i % 3] dB over the rest
LEVEL_DB = -18.0  # every probe's input RMS
SETS = ("a-cappella", "a-cappella-sung", "no-voice", "voice-over-real")


def _db(x: float) -> float:
    return float(10 * np.log10(max(x, 1e-20)))


def _energy(x: np.ndarray) -> float:
    return float(np.sum(np.square(x, dtype=np.float64)))


def _at_level(*parts: np.ndarray) -> list[np.ndarray]:
    """Scale the parts together so that their sum sits at LEVEL_DB RMS."""
    g = 10 ** (LEVEL_DB / 20) / (library.rms(sum(parts)) + 1e-12)
    return [p * g for p in parts]


def spoken(seed: int) -> np.ndarray:
    """(2, n) a held-out real speaker's phrases, centred, as recorded."""
    rng = np.random.default_rng(seed)
    langs = words.languages("test")
    line = words.phrase_line(rng, SECONDS, langs[rng.integers(len(langs))])
    n = int(SECONDS * library.SR)
    line = np.pad(line[:n], (0, max(0, n - line.size)))
    return np.stack([line, line])


def sung(seed: int) -> np.ndarray:
    """(2, n) a held-out real speaker re-sung by the corpus's WORLD singer (its doubles and harmonies included)."""
    for k in range(8):
        rng = np.random.default_rng(seed * 8 + k)
        song = compose.new_song(rng, SECONDS)
        out = singer.vocals(rng, song, SECONDS, "test", True)
        if out is not None and library.rms(out[0]) > 0:
            return library.stereo(out[0])[:, : int(SECONDS * library.SR)]
    raise RuntimeError(f"the singer gave nothing for seed {seed}")


def accompaniment(seed: int) -> np.ndarray:
    """(2, n) held-out recorded drums + instrument phrase + bass line at equal RMS. Drums: a
    held-out recorded kit played by the corpus's drummer, or (every other seed) the one
    held-out recorded loop."""
    rng = np.random.default_rng(seed)
    song = compose.new_song(rng, SECONDS)
    kits = drumkit.kits("test")
    drums = (drumkit.render(rng, song, SECONDS, kits[rng.integers(len(kits))]) if seed % 2 == 0 and kits
             else drumkit.loop(rng, song, SECONDS, "test"))
    parts = [drums, sampler.phrase(rng, "instruments", SECONDS, "test"), sampler.phrase(rng, "bass", SECONDS, "test")]
    parts = [p / (library.rms(p) + 1e-12) for p in parts if p is not None and library.rms(p) > 0]
    if not parts:
        raise RuntimeError("no held-out recorded loops or phrases: apt-get install sonic-pi-samples lmms-common")
    return sum(parts)


def clip(name: str, i: int) -> tuple[np.ndarray, np.ndarray]:
    """(voice, rest), each (2, n) float64, their sum at LEVEL_DB; either may be silent."""
    seed = SEED + 1000 * SETS.index(name) + i
    if name in ("a-cappella", "a-cappella-sung"):
        v = _at_level(spoken(seed) if name == "a-cappella" else sung(seed))[0]
        return v, np.zeros_like(v)
    rest = accompaniment(seed)
    if name == "no-voice":
        return np.zeros_like(rest), _at_level(rest)[0]
    v = spoken(seed)
    v = v / library.rms(v) * library.rms(rest) * 10 ** (VOICE_RATIOS[i % len(VOICE_RATIOS)] / 20)
    v, rest = _at_level(v, rest)
    return v, rest


def score(voice: np.ndarray, rest: np.ndarray, vocals: np.ndarray, others: np.ndarray) -> dict:
    """The figures of one clip: where the input's energy went, and SDR where a reference exists."""
    mix = voice + rest
    row = {"vocals_db": round(_db(_energy(vocals)) - _db(_energy(mix)), 2),
           "others_db": round(_db(_energy(others)) - _db(_energy(mix)), 2)}
    if _energy(voice) > 0 and _energy(rest) > 0:
        row["vocals_improvement"] = round(usdr(voice, vocals) - usdr(voice, mix), 2)
        row["rest_improvement"] = round(usdr(rest, others) - usdr(rest, mix), 2)
    return row


def run(variant: str, checkpoint: str | None, clips: int, threads: int) -> dict:
    import torch

    from models.engine import SeparationEngine

    torch.set_num_threads(threads)
    engine = SeparationEngine(variant, checkpoint, threads=threads)
    stems = engine.stems
    out = {"variant": variant, "weights_sha256": engine.weights_sha256, "clips": clips, "sets": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for name in SETS:
            rows = []
            for i in range(clips):
                voice, rest = clip(name, i)
                result = engine.separate((voice + rest).astype(np.float32), Path(tmp) / f"{name}-{i}")
                ests = {s: sf.read(result.stems[s], dtype="float64", always_2d=True)[0].T for s in stems}
                others = sum(ests[s] for s in stems if s != "vocals")
                rows.append(score(voice, rest, ests["vocals"], others))
            out["sets"][name] = {"rows": rows, **summary(rows)}
    return out


def summary(rows: list[dict]) -> dict:
    keys = rows[0].keys()
    med = {f"{k}_median": round(float(np.median([r[k] for r in rows])), 2) for k in keys}
    mean = {f"{k}_mean": round(float(np.mean([r[k] for r in rows])), 2) for k in keys}
    return med | mean


def table(report: dict) -> str:
    s = report["sets"]
    lines = [f"{report['variant']} ({report['weights_sha256'][:12]}), {report['clips']} clips per set, medians",
             "| set | vocals stem vs input | rest vs input | vocals SDR improvement | rest SDR improvement |",
             "|---|---|---|---|---|"]
    for name, r in s.items():
        cells = [f"{r['vocals_db_median']:+.2f} dB", f"{r['others_db_median']:+.2f} dB",
                 f"{r['vocals_improvement_median']:+.2f} dB (mean {r['vocals_improvement_mean']:+.2f})" if "vocals_improvement_median" in r else "—",
                 f"{r['rest_improvement_median']:+.2f} dB (mean {r['rest_improvement_mean']:+.2f})" if "rest_improvement_median" in r else "—"]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", choices=("2stem", "5stem"), required=True)
    ap.add_argument("--checkpoint", help="default: the shipped checkpoint of the variant")
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", type=Path, help="write the full report here")
    args = ap.parse_args()
    report = run(args.variant, args.checkpoint, args.clips, args.threads)
    print(table(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
