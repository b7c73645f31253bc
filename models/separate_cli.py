"""`locoserve separate FILE_OR_FOLDER...`: many songs in one call, the model loaded once.

Every input is checked (exists, decodable header, within the limits) before the model loads,
so a typo costs nothing; each bad file gets one line on stderr and the others go on. Stems
are written to a hidden staging folder inside the output folder and then moved to their
names from the `--filename` template, so an interrupted or failed song leaves nothing
half-written. Exit status: 0 when every file was separated, 1 when any failed, 2 for a usage
error (bad option, no model).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

# what a folder is searched for; a file named on the command line is tried whatever its name
AUDIO_EXTENSIONS = {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".m4b", ".aac", ".alac",
                    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".wma", ".asf", ".avi", ".aif", ".aiff", ".aifc",
                    ".caf", ".wv", ".ape", ".ac3", ".w64", ".mka"}


class UsageError(Exception):
    pass


@dataclass
class Track:
    source: str  # as the user named it (or as found in a folder)
    path: Path
    name: str = ""
    seconds: float = 0.0
    error: str | None = None
    code: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)


def collect(inputs: list[str], exclude: Path) -> list[Track]:
    """Files as named, folders searched (recursively, hidden entries and `exclude` skipped),
    each file once, in the order given (a folder's files sorted)."""
    tracks, seen = [], set()
    exclude = exclude.resolve()

    def add(source: str, path: Path, error: str | None = None, code: str | None = None) -> None:
        key = path.resolve() if path.exists() else path
        if key in seen:
            return
        seen.add(key)
        tracks.append(Track(source, path, error=error, code=code))

    for arg in inputs:
        path = Path(arg)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and not p.resolve().is_relative_to(exclude))
            if not found:
                add(arg, path, "no audio files in this folder", "empty_folder")
            for p in found:
                add(str(p), p)
        elif path.exists():
            add(arg, path)
        else:
            add(arg, path, "no such file or folder", "not_found")
    return tracks


def name_tracks(tracks: list[Track]) -> None:
    """{track}: the file name without its extension; 'name (2)' for a second song of that name."""
    from .naming import track_name

    used: dict[str, int] = {}
    for t in tracks:
        base = track_name(t.path.name)
        n = used.get(base.casefold(), 0) + 1
        used[base.casefold()] = n
        t.name = base if n == 1 else f"{base} ({n})"


def choose_variant(variant: str | None, stems: list[str] | None, two_stems: str | None) -> tuple[str, set[str] | None]:
    """The variant to run and the stems to keep (None: all), from --variant/--stems/--two-stems."""
    from .config import catalog

    table = {v: spec["stems"] for v, spec in catalog()["variants"].items()}
    if two_stems:
        for v, names in table.items():
            if len(names) == 2 and two_stems in names and (variant in (None, v)):
                return v, None
        five = [v for v, names in table.items() if two_stems in names]
        if five:
            raise UsageError(f"--two-stems {two_stems}: no model splits {two_stems} from the rest of the mix; "
                             f"use --stems {two_stems} (the {five[0]} model) instead")
        raise UsageError(f"--two-stems {two_stems}: unknown stem; known: {', '.join(_all_stems(table))}")
    if stems:
        unknown = [s for s in stems if s not in _all_stems(table)]
        if unknown:
            raise UsageError(f"--stems: unknown stem {unknown[0]!r}; known: {', '.join(_all_stems(table))}")
        candidates = [v for v, names in table.items() if set(stems) <= set(names) and variant in (None, v)]
        if not candidates:
            where = f"the {variant} model has {', '.join(table[variant])}" if variant else "no model has them all"
            raise UsageError(f"--stems {','.join(stems)}: {where}")
        return candidates[0], set(stems)
    return variant or "2stem", None


def _all_stems(table: dict) -> list[str]:
    return list(dict.fromkeys(s for names in table.values() for s in names))


@contextmanager
def quiet_c_stderr():
    """libmpg123, inside libsndfile, prints 'Note: Illegal Audio-MPEG-Header …' on the process's
    stderr while it probes a file named .mp3 that is not one; our one-line error says it better."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _fail(track: Track, code: str, message: str, out) -> None:
    track.code, track.error = code, message
    out.line(f"locoserve: {track.source}: {message}", err=True)


class Output:
    """stdout for results, stderr for progress and errors; the progress line is cleared first."""

    def __init__(self, bar, quiet: bool, as_json: bool):
        self.bar, self.quiet, self.json = bar, quiet, as_json

    def line(self, text: str, err: bool = False) -> None:
        if self.bar:
            self.bar.clear()
        if err:
            print(text, file=sys.stderr, flush=True)
        elif not self.quiet and not self.json:
            print(text, flush=True)

    def record(self, data: dict) -> None:
        if self.json:
            if self.bar:
                self.bar.clear()
            print(json.dumps(data), flush=True)


def _format_duration(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"


def run(args: argparse.Namespace) -> int:
    from . import audio
    from .naming import TemplateError, check_template, render
    from .progress import BatchProgress
    from .formats import EncodingError, check_encoding

    try:
        template = check_template(args.filename)
        bitrate = check_encoding(args.format, args.bitrate)
        stems = [s.strip() for s in args.stems.split(",") if s.strip()] if args.stems else None
        variant, keep = choose_variant(args.variant, stems, args.two_stems)
        if args.shifts is not None and args.shifts < 1:
            raise UsageError("--shifts must be at least 1 (one pass per chunk)")
    except (TemplateError, EncodingError, UsageError) as e:
        print(f"locoserve: {e}", file=sys.stderr)
        return 2
    out_root = Path(args.out)
    tracks = collect(args.inputs, out_root)
    name_tracks(tracks)
    bar = None if args.quiet else BatchProgress()
    out = Output(bar, args.quiet, args.json)

    for t in tracks:  # every header before the model loads: a bad file costs nothing
        if t.error:
            _fail(t, t.code, t.error, out)
            continue
        try:
            with quiet_c_stderr():
                t.seconds = audio.probe(t.path).duration
        except audio.AudioError as e:
            _fail(t, e.code, str(e), out)
    todo = [t for t in tracks if not t.error]
    started = time.monotonic()
    if todo:
        engine = _load_engine(args, variant)
        if engine is None:
            return 2
        if bar:
            bar.begin(len(todo), sum(t.seconds for t in todo))
        try:
            for i, t in enumerate(todo, 1):
                _separate_one(engine, t, i, out_root, template, args, bitrate, keep, bar, out, render)
        except KeyboardInterrupt:
            out.line("locoserve: interrupted; the song in progress was not written", err=True)
            return 130
    for t in tracks:
        if t.error:
            out.record({"file": t.source, "error": {"code": t.code, "message": t.error}})
    return _summary(tracks, time.monotonic() - started, out)


def _load_engine(args, variant: str):
    from .engine import EngineError, SeparationEngine

    mode = "cpu_only" if args.device == "cpu" else "gpu_allowed"
    logging.getLogger("models.device").setLevel(logging.ERROR)  # the device is said below, once
    try:
        engine = SeparationEngine(variant, args.checkpoint, mode=mode, device=args.device,
                                  random_weights=args.random_weights, threads=args.threads,
                                  chunk_seconds=args.chunk, overlap_seconds=args.overlap, shifts=args.shifts)
    except (EngineError, ValueError) as e:
        print(f"locoserve: {e}", file=sys.stderr)
        return None
    if engine.random_weights:
        print("WARNING: random weights; the output is not a separation", file=sys.stderr)
    if args.device == "cuda":  # said once, and only to someone who asked for a GPU
        choice = engine.choice
        if choice.fallback:
            print(f"locoserve: running on the CPU: {choice.reason}", file=sys.stderr)
        else:
            print(f"locoserve: running on {choice.name}", file=sys.stderr)
    return engine


def _separate_one(engine, t: Track, index: int, out_root: Path, template: str, args, bitrate, keep, bar, out,
                  render) -> None:
    from . import audio
    from .formats import EncodingError

    staging = out_root / f".locoserve-{os.getpid()}-{index}"
    if bar:
        bar.start(index, t.source, t.seconds)
    t0 = time.monotonic()
    try:
        result = engine.separate(t.path, staging, fmt=args.format, bitrate=bitrate, normalize=args.normalize,
                                 progress=bar)
        for stem, path in result.stems.items():
            if keep is not None and stem not in keep:
                path.unlink()
                continue
            dest = out_root / render(template, track=t.name, stem=stem, ext=args.format)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            t.outputs[stem] = dest
        t.metadata = result.metadata
    except (audio.AudioError, EncodingError) as e:
        _fail(t, getattr(e, "code", "bad_option"), str(e), out)
        return
    except OSError as e:
        _fail(t, "io_error", f"cannot write the stems: {e.strerror or e}", out)
        return
    except Exception as e:  # a bug of ours: one line, the traceback only on request
        hint = "" if os.environ.get("LOCOSERVE_DEBUG") else " (LOCOSERVE_DEBUG=1 shows the traceback)"
        if os.environ.get("LOCOSERVE_DEBUG"):
            traceback.print_exc()
        _fail(t, "internal", f"internal error: {type(e).__name__}: {e}{hint}", out)
        return
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if bar:
            bar.done_file()
    elapsed = time.monotonic() - t0
    names = ", ".join(str(p) for p in t.outputs.values())
    out.line(f"{t.source} → {names} ({_format_duration(t.seconds)} of audio in {elapsed:.1f} s)")
    out.record({"file": t.source, "outputs": {k: str(v) for k, v in t.outputs.items()}, **t.metadata})


def _summary(tracks: list[Track], elapsed: float, out: Output) -> int:
    failed = [t for t in tracks if t.error]
    done = len(tracks) - len(failed)
    if not tracks:
        out.line("locoserve: nothing to separate", err=True)
        return 1
    if (len(tracks) > 1 and not out.quiet) or failed:
        text = f"{done} of {len(tracks)} files separated in {elapsed:.0f} s"
        if failed:
            text += f"; failed: {', '.join(t.source for t in failed)}"
        out.line(text, err=True)
    return 1 if failed else 0


def register(sub: argparse._SubParsersAction) -> None:
    from .config import variants
    from .naming import DEFAULT_TEMPLATE
    from .formats import DEFAULT_BITRATE, FORMATS

    p = sub.add_parser(
        "separate", help="split audio files into stems",
        description="Split songs into stems. Inputs are files or folders (searched recursively for audio "
                    "and video files); the model is loaded once. Stems go to OUT/{track}/{stem}.{ext}.")
    p.add_argument("inputs", nargs="+", metavar="FILE_OR_FOLDER")
    p.add_argument("--variant", choices=variants(), help="the model: 2stem (default), 5stem or speech")
    pick = p.add_mutually_exclusive_group()
    pick.add_argument("--stems", metavar="STEM[,STEM]",
                      help="keep only these stems; picks the model that has them (vocals → 2stem, drums → 5stem)")
    pick.add_argument("--two-stems", metavar="STEM",
                      help="STEM and everything else: vocals (→ vocals, instrumental) or speech (→ speech, noise)")
    p.add_argument("--out", "-o", default="separated", help="output folder (default: separated)")
    p.add_argument("--filename", default=DEFAULT_TEMPLATE,
                   help=f"output path template inside --out, with {{track}}, {{stem}}, {{ext}} "
                        f"(default: {DEFAULT_TEMPLATE})")
    p.add_argument("--format", default="wav", choices=FORMATS,
                   help="wav (32-bit float), flac (24-bit), mp3, opus (default: wav)")
    p.add_argument("--bitrate", type=int, metavar="KBPS",
                   help=f"mp3 (default {DEFAULT_BITRATE['mp3']}) and opus (default {DEFAULT_BITRATE['opus']}) only")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: a GPU when there is one, silently the CPU otherwise")
    p.add_argument("--checkpoint")
    p.add_argument("--random-weights", action="store_true", help="untrained network (tests, benchmarks)")
    p.add_argument("--normalize", nargs="?", const="peak", choices=["peak", "loudness"],
                   help="per-stem normalization after inference (default peak)")
    p.add_argument("--threads", type=int)
    p.add_argument("--chunk", type=float, default=18.0, help="chunk length in seconds")
    p.add_argument("--overlap", type=float, default=1.75, help="crossfade length in seconds")
    p.add_argument("--shifts", type=int, metavar="N", help="passes per chunk at sub-hop offsets, averaged: "
                   "better estimates for N times the compute (default: 2 for speech, 1 for music)")
    p.add_argument("--json", action="store_true", help="one JSON record per file on stdout (JSON Lines)")
    p.add_argument("--quiet", "-q", action="store_true", help="errors and the failure summary only")
    p.set_defaults(func=run)
