"""A drummer on real recorded kits: Hydrogen drumkits and Sonic Pi's kit hits, one-shot by one-shot.

A kit maps roles (kick, snare, hats, toms, cymbals, clap, percussion) to recorded samples
with velocity layers (`drumkit.xml` of each Hydrogen kit; Sonic Pi's `drum_*` files grouped
by name). The drummer plays the song's groove (compose.GROOVES) with humanized timing and
velocity (accents, ghost notes, fills into the next phrase, crashes on phrase starts, an open
hat that the next closed hat chokes), each piece panned where it sits in a kit, and the kit
in one room. Whole kits are held out for the test side (TEST_KITS), so the test drums are
recordings of drums the network has never heard.

Package: hydrogen-drumkits (and sonic-pi-samples for the second source).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import compose, library, rooms

SR = library.SR
TEST_KITS = ("The Black Pearl 1.0", "HardElectro1")
ROLES = ("kick", "snare", "hat", "hat_open", "hat_pedal", "tom_hi", "tom_mid", "tom_low", "crash", "ride",
         "clap", "perc")
_RULES = [  # (role, pattern on the instrument's name or file), first match wins
    ("hat_open", r"open.?h|oh\b|hh.?open|hat.?open|hihat.?o|open"),
    ("hat_pedal", r"pedal|foot|ph\b"),
    ("hat", r"h(i)?.?h(at)?|hat|hh|closed"),
    ("kick", r"kick|bd|bass.?drum|kik|bassdrum"),
    ("snare", r"snare|sn\b|sd\b|rim|stick|snr"),
    ("tom_hi", r"tom.?(hi|high|1)|hi.?tom|high.?tom|tomhi"),
    ("tom_low", r"tom.?(lo|low|floor|3|4)|floor|lo.?tom|low.?tom"),
    ("tom_mid", r"tom"),
    ("ride", r"ride|bell|cup"),
    ("crash", r"crash|splash|china|cym"),
    ("clap", r"clap|snap"),
]
# where a piece sits, seen from the audience: −1 left … 1 right
PAN = {"kick": 0.0, "snare": -0.05, "hat": 0.35, "hat_open": 0.35, "hat_pedal": 0.35, "tom_hi": -0.2,
       "tom_mid": -0.35, "tom_low": -0.55, "crash": 0.5, "ride": -0.5, "clap": 0.0, "perc": 0.3}


@dataclass
class Piece:
    role: str
    layers: list[tuple[float, float, str, float]]  # (vel min, vel max, file, gain)

    def sample(self, vel: float, rng: np.random.Generator) -> np.ndarray:
        fits = [ly for ly in self.layers if ly[0] <= vel <= ly[1]] or self.layers
        _, _, path, gain = fits[rng.integers(len(fits))]
        return library.load(path) * gain


@dataclass
class Kit:
    name: str
    pieces: dict[str, list[Piece]] = field(default_factory=dict)

    def has(self, role: str) -> bool:
        return bool(self.pieces.get(role))


def classify(name: str) -> str:
    low = name.lower()
    for role, pattern in _RULES:
        if re.search(pattern, low):
            return role
    return "perc"


def _text(node: ET.Element, tag: str, default: str = "") -> str:
    for child in node:
        if child.tag.split("}")[-1] == tag:
            return child.text or default
    return default


def _children(node: ET.Element, tag: str) -> list[ET.Element]:
    return [c for c in node.iter() if c.tag.split("}")[-1] == tag]


def _hydrogen_kit(folder: Path) -> Kit | None:
    try:
        root = ET.parse(folder / "drumkit.xml").getroot()
    except (ET.ParseError, OSError):
        return None
    kit = Kit(folder.name)
    for inst in _children(root, "instrument"):
        name = _text(inst, "name")
        layers = []
        for layer in _children(inst, "layer"):
            f = folder / _text(layer, "filename")
            if f.is_file() and library.readable(str(f)):
                layers.append((float(_text(layer, "min", "0")), float(_text(layer, "max", "1")), str(f),
                               float(_text(layer, "gain", "1"))))
        if not layers:  # older kits: one <filename> per instrument
            f = folder / _text(inst, "filename")
            if _text(inst, "filename") and f.is_file() and library.readable(str(f)):
                layers.append((0.0, 1.0, str(f), 1.0))
        if layers:
            role = classify(name + " " + Path(layers[0][2]).stem)
            kit.pieces.setdefault(role, []).append(Piece(role, layers))
    return kit if kit.has("kick") and kit.has("snare") else None


@lru_cache(maxsize=1)
def _all_kits() -> tuple[Kit, ...]:
    kits = []
    if library.available("hydrogen-drumkits"):
        base = library.root("hydrogen-drumkits")
        kits += [k for k in (_hydrogen_kit(d) for d in sorted(base.iterdir()) if d.is_dir()) if k]
    if library.available("sonic-pi-samples"):
        for side in ("train", "test"):  # Sonic Pi's hits, split file by file into two kits
            kit = Kit(f"sonic-pi-{side}")
            for f in library.files("sonic-pi-samples", "drum_*", split=side) + \
                    library.files("sonic-pi-samples", "bd_*", split=side) + \
                    library.files("sonic-pi-samples", "sn_*", split=side):
                role = classify(f.stem.replace("drum_", "").replace("cymbal_closed", "hat").replace(
                    "cymbal_open", "hat_open").replace("cymbal_pedal", "pedal"))
                kit.pieces.setdefault(role, []).append(Piece(role, [(0.0, 1.0, str(f), 1.0)]))
            if kit.has("kick") and kit.has("snare"):
                kits.append(kit)
    return tuple(kits)


def kits(split: str) -> list[Kit]:
    def test_side(k: Kit) -> bool:
        return k.name in TEST_KITS or k.name == "sonic-pi-test"
    return [k for k in _all_kits() if test_side(k) == (split == "test")]


@dataclass(frozen=True)
class Hit:
    time: float
    role: str
    vel: float  # 0..1


def pattern(rng: np.random.Generator, song: compose.Song, kit: Kit) -> list[Hit]:
    """The groove of the song as hits, humanized; roles fall back to what the kit has."""
    kick, snare, hat = compose.GROOVES[list(compose.GROOVES)[rng.integers(len(compose.GROOVES))]]
    timing = rng.uniform(0.003, 0.012)
    swing = rng.uniform(0, 0.12) if rng.random() < 0.3 else 0.0
    ride_section = rng.random() < 0.25 and kit.has("ride")
    step = song.beat / 4
    hits: list[Hit] = []

    def add(t: float, role: str, vel: float) -> None:
        hits.append(Hit(max(0.0, t + rng.normal(0, timing)), role, float(np.clip(vel, 0.05, 1.0))))

    for bar in range(song.bars):
        t0 = bar * song.bar
        fill = bar % 4 == 3 and rng.random() < 0.6
        for s in range(16):
            t = t0 + s * step + (swing * step if s % 2 else 0.0)
            if fill and s >= 12 - 4 * int(rng.random() < 0.3):
                role = str(rng.choice(["tom_hi", "tom_mid", "tom_low", "snare"]))
                add(t, role, rng.uniform(0.6, 1.0))
                continue
            if s in kick or (rng.random() < 0.04 and s % 2 == 0):
                add(t, "kick", rng.uniform(0.75, 1.0))
            if s in snare:
                add(t, "snare", rng.uniform(0.75, 1.0))
            elif rng.random() < 0.07:
                add(t, "snare", rng.uniform(0.1, 0.3))  # ghost note
            if s in hat:
                accent = 0.85 if s % 4 == 0 else 0.55
                role = "ride" if ride_section else ("hat_open" if rng.random() < 0.07 else "hat")
                add(t, role, rng.uniform(accent - 0.15, accent + 0.12))
        if bar % 4 == 0 and (bar > 0 or rng.random() < 0.5):
            add(t0, "crash", rng.uniform(0.7, 1.0))
    return hits


def _fallback(kit: Kit, role: str) -> str | None:
    chain = {"hat_open": ["hat", "ride"], "hat_pedal": ["hat"], "hat": ["ride", "perc"], "ride": ["hat", "crash"],
             "crash": ["ride", "hat_open"], "tom_hi": ["tom_mid", "tom_low", "snare"],
             "tom_mid": ["tom_hi", "tom_low", "snare"], "tom_low": ["tom_mid", "tom_hi", "kick"],
             "clap": ["snare"], "perc": ["hat"]}
    for r in [role] + chain.get(role, []):
        if kit.has(r):
            return r
    return None


def render(rng: np.random.Generator, song: compose.Song, seconds: float, kit: Kit) -> np.ndarray:
    """(2, n) drums: the pattern played on `kit`, panned, in one room."""
    n = int(round(seconds * SR))
    out = np.zeros((2, n + SR * 3))
    hits = sorted(pattern(rng, song, kit), key=lambda h: h.time)
    chosen = {r: kit.pieces[r][rng.integers(len(kit.pieces[r]))] for r in kit.pieces}
    spread = rng.uniform(0.4, 1.0) * (1 if rng.random() < 0.5 else -1)  # drummer's or audience's view
    open_until = -1.0
    for h in hits:
        role = _fallback(kit, h.role)
        if role is None or h.time * SR >= n:
            continue
        y = library.stereo(chosen[role].sample(h.vel, rng)).copy()
        y = y[:, : 3 * SR] * h.vel ** 1.6
        i = int(h.time * SR)
        if role == "hat" and i < open_until:  # a closed hat chokes the open one still ringing
            j = i + int(0.02 * SR)
            out[:, i:j] *= np.linspace(1, 0, j - i)
            out[:, j:int(open_until)] = 0
        if role == "hat_open":
            open_until = i + y.shape[1]
        pos = np.clip(PAN[role] * spread + rng.normal(0, 0.03), -1, 1)
        angle = (pos + 1) * np.pi / 4
        y = y * np.array([[np.cos(angle)], [np.sin(angle)]]) * np.sqrt(2)
        m = min(y.shape[1], out.shape[1] - i)
        out[:, i:i + m] += y[:, :m]
    out = out[:, :n]
    if rng.random() < 0.8:
        ir = rooms.impulse_response(rng, rt60=float(rng.uniform(0.2, 0.9)), drr_db=float(rng.uniform(3, 14)), channels=2)
        out = rooms.apply(out, ir)
    return out


def loop(rng: np.random.Generator, song: compose.Song, seconds: float, split: str) -> np.ndarray | None:
    """A recorded drum break or percussion loop, resampled towards the song's tempo."""
    files = [f for pkg, pat in (("sonic-pi-samples", "loop_amen*"), ("sonic-pi-samples", "loop_breakbeat*"),
                                ("sonic-pi-samples", "loop_compus*"), ("sonic-pi-samples", "loop_tabla*"),
                                ("sonic-pi-samples", "loop_safari*"), ("sonic-pi-samples", "loop_perc*"),
                                ("sonic-pi-samples", "loop_mika*"), ("lmms-common", "beats/*"))
             if library.available(pkg) for f in library.files(pkg, pat, split=split)]
    if not files:
        return None
    x = library.stereo(library.trim(library.load(files[rng.integers(len(files))])))
    ratio = rng.uniform(0.85, 1.18)  # a little faster or slower, as a producer would
    from scipy.signal import resample_poly
    x = resample_poly(x, 100, int(round(100 * ratio)), axis=-1)
    n = int(round(seconds * SR))
    reps = int(np.ceil(n / max(1, x.shape[1]))) + 1
    start = int(rng.integers(0, max(1, x.shape[1])))
    return np.tile(x, reps)[:, start:start + n]
