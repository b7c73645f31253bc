"""authorize_and_consume decisions per second, on SQLite and PostgreSQL, 1 and 8 callers.

    python benchmarks/entitlements_throughput.py [--seconds 10] [--repeats 3]
        [--postgres postgresql://postgres@127.0.0.1:5432/test]

Each caller is a thread with its own API key (its own user on the VIP plan, so no quota
stops it), calling authorize_and_consume back to back for `--seconds`; a decision is one
committed transaction (key lookup, plan, conditional UPDATE, usage event). Reported: the
median decisions/s over `--repeats` runs and every error (the target is none). A second
table runs the same 8 callers against ONE shared key, all racing on the same counter row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import SQLModel  # noqa: E402

from entitlements import authorize_and_consume, plans  # noqa: E402
from entitlements.accounts import create_user  # noqa: E402
from entitlements.db import init_db, make_engine  # noqa: E402


def run(engine, keys: list[str], callers: int, seconds: float) -> tuple[float, Counter]:
    stop = time.monotonic() + seconds
    counts, errors = [0] * callers, Counter()
    gate = threading.Barrier(callers)

    def work(i: int) -> None:
        key = keys[i % len(keys)]
        gate.wait()
        while time.monotonic() < stop:
            try:
                authorize_and_consume(engine, "stem_split", api_key=key)
                counts[i] += 1
            except Exception as e:  # any error at all is a failure of the benchmark's target
                errors[f"{type(e).__name__}: {str(e)[:80]}"] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - t0), errors


def database(kind: str, url: str | None):
    if kind == "sqlite":
        url = f"sqlite:///{tempfile.mkdtemp(prefix='bench')}/bench.db"
    engine = make_engine(url, pool_size=16)
    if kind == "postgres":
        SQLModel.metadata.drop_all(engine)
    init_db(engine)
    plans.sync(engine)
    return engine


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--postgres", default=os.environ.get("TEST_DATABASE_URL"))
    args = p.parse_args()
    kinds = ["sqlite"] + (["postgres"] if args.postgres else [])
    print(f"{os.cpu_count()} CPUs; {args.seconds:g} s per run, median of {args.repeats}")
    print("\n| database | callers | keys | decisions/s (median) | runs | errors |\n|---|---|---|---|---|---|")
    for kind in kinds:
        engine = database(kind, args.postgres)
        keys = [create_user(engine, f"bench{i}@x", "vip")[1] for i in range(8)]
        for callers, shared in ((1, False), (8, False), (8, True)):
            runs, errors = [], Counter()
            for _ in range(args.repeats):
                rate, errs = run(engine, keys[:1] if shared else keys, callers, args.seconds)
                runs.append(rate)
                errors.update(errs)
            print(f"| {kind} | {callers} | {'1 shared' if shared else callers} | "
                  f"**{statistics.median(runs):.0f}** | {', '.join(f'{r:.0f}' for r in runs)} | "
                  f"{sum(errors.values()) or 'none'} |")
            for e, n in errors.most_common(3):
                print(f"  error ×{n}: {e}")
        engine.dispose()


if __name__ == "__main__":
    main()
