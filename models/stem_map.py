"""Which finer stems make up a coarser one: the one rule shared by training targets and
checkpoint folding, so that a 2-stem "instrumental" means the same sum everywhere."""

from __future__ import annotations


def composition(outputs: tuple[str, ...], available: tuple[str, ...]) -> list[tuple[int, ...]]:
    """For each output stem, the indices of the `available` stems that sum to it.

    A stem present in both maps to itself; 'instrumental' is everything but vocals.
    """
    parts = []
    for name in outputs:
        if name in available:
            parts.append((available.index(name),))
        elif name == "instrumental" and "vocals" in available:
            parts.append(tuple(i for i, s in enumerate(available) if s != "vocals"))
        else:
            raise ValueError(f"no stem {name!r} can be made from {list(available)}")
    return parts
