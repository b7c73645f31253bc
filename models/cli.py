"""`locoserve separate | data synth | train | fold | eval`: the engine and training from a shell
(`separate` itself lives in `separate_cli`)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def _synth(args: argparse.Namespace) -> int:
    from .training import corpus
    from .training.synth.fluid import ToolMissing

    kinds = ["music", "speech"] if args.kind == "all" else [args.kind]
    try:
        for kind in kinds:
            seconds = args.seconds or (10.0 if kind == "music" else 6.0)
            test_seconds = args.test_seconds or (20.0 if kind == "music" else 10.0)
            for split, count, length in (("train", args.train, seconds), ("test", args.test, test_seconds),
                                         ("test-real", args.test_real, test_seconds)):
                if count:
                    corpus.synthesize(args.out, kind, split, count, length, jobs=args.jobs)
    except ToolMissing as e:
        print(f"locoserve: {e}", file=sys.stderr)
        return 2
    return 0


def _train(args: argparse.Namespace) -> int:
    from .training.train import TrainConfig, Trainer

    cfg = TrainConfig(variant=args.variant, size=args.size, data=args.data, musdb=args.musdb,
                      out=args.out, steps=args.steps, batch=args.batch, seconds=args.seconds,
                      lr=args.lr, warmup=args.warmup, seed=args.seed, device=args.device,
                      threads=args.threads, init=args.init, val_every=args.val_every, ema=args.ema,
                      snapshot_every=args.snapshot_every, sparse=args.sparse, gaps=args.gaps,
                      silent_weight=args.silent_weight)
    trainer = Trainer(cfg)
    trainer.run()
    if args.export:
        sha = trainer.export(args.export)
        print(f"exported {args.export} (sha256 {sha})")
    return 0


def _fold(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, save_checkpoint
    from .config import load_config
    from .fold import fold_into

    source = load_checkpoint(args.checkpoint)
    model = fold_into(source, load_config(args.variant, source.config.size))
    training = {**source.training, "folded_from": {"checkpoint": source.path.name, "sha256": source.sha256,
                                                   "stems": list(source.stems)}}
    sha = save_checkpoint(args.out, model, training)
    print(f"folded {source.path.name} ({', '.join(source.stems)}) into {args.out} "
          f"({', '.join(model.stems)}; sha256 {sha})")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from .engine import SeparationEngine
    from .progress import ProgressBar
    from .training import evaluate

    engine = SeparationEngine(args.variant, args.checkpoint, random_weights=args.random_weights,
                              threads=args.threads, shifts=args.shifts)
    kind = "speech" if args.variant == "speech" else "music"
    splits = [args.split] if args.split else evaluate.splits_present(Path(args.data), kind) or ["test"]
    reports = {}
    for split in splits:
        reports[split] = evaluate.evaluate(engine, Path(args.data), args.limit, ProgressBar(f"eval {split}", " clips"),
                                           split=split)
        print(f"\n{evaluate.SPLIT_TITLES.get(split, split)}:\n{evaluate.markdown(reports[split])}")
        if args.out:
            evaluate.write(reports[split], Path(f"{args.out}-{split}"))
    if args.card:
        from .training.card import write_card
        command = "locoserve " + " ".join(a if " " not in a else repr(a) for a in sys.argv[1:])
        print(f"card: {write_card(Path(args.checkpoint), reports, command, card_note(args))}")
    return 0


def card_note(args: argparse.Namespace) -> str:
    """The card's paragraph, from `--card-note` or `--card-note-file`.

    A file keeps a long note (quotes, several paragraphs) out of the shell, and a committed
    note file lets the card's "Measured with" command regenerate the card as shipped.
    """
    if args.card_note and args.card_note_file:
        raise SystemExit("give --card-note or --card-note-file, not both")
    if args.card_note_file:
        return Path(args.card_note_file).read_text().strip()
    return args.card_note or ""


def register(sub: argparse._SubParsersAction) -> None:
    from . import separate_cli
    from .config import variants

    separate_cli.register(sub)

    data = sub.add_parser("data", help="training data").add_subparsers(dest="data_cmd", required=True)
    p = data.add_parser("synth", help="render the synthetic corpus (resumable)")
    p.add_argument("--kind", default="all", choices=["music", "speech", "all"])
    p.add_argument("--out", default="corpus")
    p.add_argument("--train", type=int, default=1200, help="training clips per kind")
    p.add_argument("--test", type=int, default=40, help="held-out clips per kind")
    p.add_argument("--test-real", type=int, default=40,
                   help="held-out clips of real recordings only, per kind (the real-sourced test set)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes rendering clips side by side")
    p.add_argument("--seconds", type=float, help="training clip length (10 music, 6 speech)")
    p.add_argument("--test-seconds", type=float, help="test clip length (20 music, 10 speech)")
    p.set_defaults(func=_synth)

    p = sub.add_parser("train", help="train a model")
    p.add_argument("--variant", required=True, choices=variants())
    p.add_argument("--size", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--data", default="corpus")
    p.add_argument("--musdb", help="a MUSDB18-HQ-style folder of real stems instead of the corpus")
    p.add_argument("--out", required=True, help="run folder (resumes if it holds a state)")
    p.add_argument("--steps", type=int, default=10000)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=500)
    p.add_argument("--ema", type=float, default=0.999, help="EMA decay of the exported weights "
                   "(its horizon, 1/(1-ema) steps, should be well under the run's length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int)
    p.add_argument("--init", help="start from this checkpoint's matching tensors")
    p.add_argument("--val-every", type=int, default=1000)
    p.add_argument("--snapshot-every", type=int, default=0,
                   help="also export the EMA weights every N steps to <out>/ema-<step>.pt")
    p.add_argument("--sparse", type=float, default=0.0,
                   help="share of music examples that keep each stem with probability 1/2 (songs' sparse passages)")
    p.add_argument("--gaps", type=float, default=0.0,
                   help="chance per music stem of a silent stretch of 0.5-3 s inside an example")
    p.add_argument("--silent-weight", type=float, default=0.1,
                   help="loss weight of a silent stem's leak (masks need not sum to one; 1 weighs it as an error)")
    p.add_argument("--export", help="write the EMA weights as a shipping checkpoint when done")
    p.set_defaults(func=_train)

    p = sub.add_parser("fold", help="turn a checkpoint into a coarser variant by summing stems (no training)")
    p.add_argument("--checkpoint", required=True, help="e.g. a 5stem checkpoint")
    p.add_argument("--variant", required=True, choices=variants(), help="e.g. 2stem")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_fold)

    p = sub.add_parser("eval", help="score a checkpoint on held-out clips through the engine")
    p.add_argument("--variant", required=True, choices=variants())
    p.add_argument("--checkpoint")
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--data", default="corpus")
    p.add_argument("--limit", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--shifts", type=int, help="passes per chunk, averaged (default: the variant's, as served)")
    p.add_argument("--split", choices=["test", "test-real"], help="one test set (default: every one present)")
    p.add_argument("--out", help="write <out>-<split>.md and .json")
    p.add_argument("--card", action="store_true", help="write the checkpoint's card next to it")
    p.add_argument("--card-note", help="a paragraph for the card (how the run was made, what it shared)")
    p.add_argument("--card-note-file", help="read the card's paragraph from this file instead")
    p.set_defaults(func=_eval)


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
