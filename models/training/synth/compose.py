"""Procedural songs in the style of Slakh2100's material: diatonic loops, grooves, bass lines,
accompaniment roles and a sung melody, as note lists per stem (rendered elsewhere).

Everything is drawn from one `numpy.random.Generator`, so a seed fixes the song.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .fluid import Note, Part

MAJOR = [0, 2, 4, 5, 7, 9, 11]
MINOR = [0, 2, 3, 5, 7, 8, 10]
# chord loops as scale degrees (0-based), one chord per bar
LOOPS_MAJOR = [[0, 4, 5, 3], [5, 3, 0, 4], [0, 5, 3, 4], [1, 4, 0, 0], [0, 3, 4, 3], [0, 2, 3, 4], [3, 4, 2, 5]]
LOOPS_MINOR = [[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 6], [0, 3, 6, 2], [0, 5, 3, 4]]

# 16-step drum grids: (kick, snare, closed hat) as step lists
GROOVES = {
    "rock": ([0, 8, 10], [4, 12], list(range(0, 16, 2))),
    "four": ([0, 4, 8, 12], [4, 12], [2, 6, 10, 14]),
    "halftime": ([0, 3, 10], [8], list(range(0, 16, 2))),
    "hiphop": ([0, 7, 10], [4, 12], list(range(16))),
    "break": ([0, 6, 10], [4, 12, 15], list(range(0, 16, 2))),
    "shuffle": ([0, 10], [4, 12], [0, 3, 4, 7, 8, 11, 12, 15]),
}
KITS = [0, 8, 16, 24, 25, 32, 40]
BASS_PROGRAMS = list(range(32, 40))
ROLE_PROGRAMS = {
    "chords": [0, 1, 2, 4, 5, 16, 17, 18, 19, 48, 49, 61, 62],
    "arpeggio": [0, 1, 4, 6, 8, 10, 11, 12, 24, 25, 46, 80, 81, 88],
    "strum": [24, 25, 26, 27, 28, 29, 30],
    "pad": [48, 49, 50, 51, 88, 89, 90, 91, 92, 94, 95],
    "counter": [56, 57, 60, 64, 65, 66, 68, 71, 73, 80, 81, 84],
}
CHOIR_PROGRAMS = [52, 53, 54]


@dataclass
class Song:
    tempo: float
    key: int
    minor: bool
    loop: list[int]
    bars: int
    beat: float = field(init=False)

    def __post_init__(self):
        self.beat = 60.0 / self.tempo

    @property
    def bar(self) -> float:
        return 4 * self.beat

    @property
    def scale(self) -> list[int]:
        return MINOR if self.minor else MAJOR

    def chord(self, bar: int, size: int = 3) -> list[int]:
        """Pitch classes (semitones above the key) of the bar's chord, stacked in thirds."""
        degree = self.loop[bar % len(self.loop)]
        sc = self.scale
        return [sc[(degree + 2 * i) % 7] + 12 * ((degree + 2 * i) // 7) for i in range(size)]


def new_song(rng: np.random.Generator, seconds: float) -> Song:
    tempo = float(rng.uniform(72, 148))
    minor = bool(rng.random() < 0.4)
    loops = LOOPS_MINOR if minor else LOOPS_MAJOR
    bars = int(np.ceil(seconds / (4 * 60 / tempo))) + 1
    return Song(tempo, int(rng.integers(12)), minor, list(loops[rng.integers(len(loops))]), bars)


def _jitter(rng, t: float, ms: float = 5.0) -> float:
    return max(0.0, t + rng.normal(0, ms / 1000))


def drums(rng: np.random.Generator, song: Song) -> Part:
    kick, snare, hat = GROOVES[list(GROOVES)[rng.integers(len(GROOVES))]]
    hat_note = [42, 42, 44, 51][rng.integers(4)]  # closed hat, pedal hat or ride
    step = song.beat / 4
    notes = []
    for bar in range(song.bars):
        t0 = bar * song.bar
        fill = bar % 4 == 3 and rng.random() < 0.6
        for s in range(16):
            t = t0 + s * step
            if fill and s >= 12:
                notes.append(Note(_jitter(rng, t), step, int(rng.choice([45, 47, 48, 50, 38])), int(rng.integers(80, 120))))
                continue
            if s in kick or (rng.random() < 0.05 and s % 2 == 0):
                notes.append(Note(_jitter(rng, t), step, 36, int(rng.integers(90, 120))))
            if s in snare:
                notes.append(Note(_jitter(rng, t), step, int(rng.choice([38, 38, 40, 39])), int(rng.integers(85, 120))))
            elif rng.random() < 0.06:  # ghost note
                notes.append(Note(_jitter(rng, t), step, 38, int(rng.integers(25, 50))))
            if s in hat:
                accent = 100 if s % 4 == 0 else 70
                notes.append(Note(_jitter(rng, t), step, hat_note if rng.random() > 0.08 else 46,
                                  int(rng.integers(accent - 20, accent + 15))))
        if bar % 4 == 0 and (bar > 0 or rng.random() < 0.5):
            notes.append(Note(t0, song.bar, int(rng.choice([49, 57])), int(rng.integers(80, 115))))
    return Part(int(rng.choice(KITS)), notes, drum=True, pan=64, volume=110, reverb=int(rng.integers(10, 60)))


def bass(rng: np.random.Generator, song: Song) -> Part:
    style = rng.integers(5)
    root_base = 36 + song.key if song.key < 8 else 24 + song.key
    notes = []
    for bar in range(song.bars):
        t0, chord = bar * song.bar, song.chord(bar)
        root = root_base + chord[0] % 12
        fifth = root + 7
        if style == 0:  # quarters on the root
            hits = [(b * song.beat, song.beat * 0.9, root) for b in range(4)]
        elif style == 1:  # driving eighths
            hits = [(e * song.beat / 2, song.beat * 0.45, root) for e in range(8)]
        elif style == 2:  # root-fifth
            hits = [(b * song.beat, song.beat * 0.9, root if b % 2 == 0 else fifth) for b in range(4)]
        elif style == 3:  # walking through the chord and scale
            tones = [root, root + chord[1] - chord[0], fifth, root + 12 - 1]
            hits = [(b * song.beat, song.beat * 0.9, tones[b]) for b in range(4)]
        else:  # syncopated
            hits = [(0, song.beat * 1.4, root), (1.5 * song.beat, song.beat * 0.4, root),
                    (2.5 * song.beat, song.beat * 0.9, fifth), (3.5 * song.beat, song.beat * 0.4, root + 12)]
        notes += [Note(_jitter(rng, t0 + t), d, int(p), int(rng.integers(80, 115))) for t, d, p in hits]
    return Part(int(rng.choice(BASS_PROGRAMS)), notes, pan=64, volume=110, reverb=int(rng.integers(0, 30)))


def _voicing(song: Song, bar: int, octave: int, size: int = 3) -> list[int]:
    return [12 * octave + song.key + pc for pc in song.chord(bar, size)]


def accompaniment(rng: np.random.Generator, song: Song, role: str) -> Part:
    notes = []
    octave = int(rng.integers(4, 6)) if role != "pad" else 4
    pattern = [[0, 2], [0, 1, 2, 3], [0, 1.5, 2, 3.5], [0]][rng.integers(4)]
    for bar in range(song.bars):
        t0 = bar * song.bar
        chord = _voicing(song, bar, octave, 4 if rng.random() < 0.3 else 3)
        if role == "chords":
            for b in pattern:
                notes += [Note(_jitter(rng, t0 + b * song.beat), song.beat * 0.9, p, int(rng.integers(60, 95))) for p in chord]
        elif role == "arpeggio":
            rate = 2 if rng.random() < 0.7 else 4
            seq = chord + [chord[1] + 12]
            for i in range(4 * rate):
                notes.append(Note(t0 + i * song.beat / rate, song.beat / rate * 0.95, seq[i % len(seq)],
                                  int(rng.integers(55, 95))))
        elif role == "strum":
            guitar = [chord[0] - 12, chord[0] - 5, chord[0], chord[1], chord[2], chord[0] + 12]
            for b in [0, 1, 1.5, 2.5, 3, 3.5]:
                down = rng.random() < 0.6
                for j, p in enumerate(guitar if down else guitar[::-1]):
                    notes.append(Note(t0 + b * song.beat + j * 0.012, song.beat * 0.5, p, int(rng.integers(55, 90))))
        elif role == "pad":
            notes += [Note(t0, song.bar, p, int(rng.integers(50, 80))) for p in chord]
        else:  # counter-line
            degree = int(rng.integers(7))
            for b in range(8):
                if rng.random() < 0.35:
                    continue
                degree = int(np.clip(degree + rng.integers(-2, 3), 0, 9))
                p = 12 * octave + song.key + song.scale[degree % 7] + 12 * (degree // 7)
                notes.append(Note(t0 + b * song.beat / 2, song.beat / 2 * 0.9, p, int(rng.integers(60, 100))))
    return Part(int(rng.choice(ROLE_PROGRAMS[role])), notes, pan=int(rng.integers(20, 108)),
                volume=int(rng.integers(80, 110)), reverb=int(rng.integers(20, 80)),
                chorus=int(rng.integers(0, 50)))


def instruments(rng: np.random.Generator, song: Song) -> list[Part]:
    roles = list(rng.choice(list(ROLE_PROGRAMS), size=int(rng.integers(1, 4)), replace=False))
    return [accompaniment(rng, song, role) for role in roles]


@dataclass(frozen=True)
class SungNote:
    start: float
    dur: float
    pitch: int


def melody(rng: np.random.Generator, song: Song, seconds: float, low: int, high: int) -> list[SungNote]:
    """Phrases of 1–2 bars separated by rests; chord tones on strong beats."""
    notes: list[SungNote] = []
    t = float(rng.uniform(0, song.bar))
    pitch = int((low + high) / 2)
    while t < seconds:
        phrase_end = t + song.bar * int(rng.integers(1, 3))
        while t < min(phrase_end, seconds):
            dur = song.beat * float(rng.choice([0.5, 0.5, 1, 1, 1.5, 2]))
            bar = int(t // song.bar)
            on_beat = abs((t / song.beat) - round(t / song.beat)) < 1e-6
            pcs = song.chord(bar) if on_beat else song.scale
            candidates = [p for p in range(low, high + 1) if (p - song.key) % 12 in [c % 12 for c in pcs]]
            near = sorted(candidates, key=lambda p: abs(p - pitch) + rng.uniform(0, 4))
            pitch = near[0] if near else pitch
            notes.append(SungNote(t, min(dur, seconds - t), pitch))
            t += dur
        t += song.beat * float(rng.choice([1, 2, 2, 3, 4]))
    return notes


def backing_choir(rng: np.random.Generator, sung: list[SungNote]) -> Part:
    notes = [Note(n.start, n.dur, n.pitch - 4 + int(rng.integers(0, 2)), int(rng.integers(50, 75))) for n in sung]
    return Part(int(rng.choice(CHOIR_PROGRAMS)), notes, pan=int(rng.integers(40, 88)), volume=90, reverb=70)
