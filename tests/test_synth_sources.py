"""The corpus's real-sourced sound sources: each renders real sound at the level it promises,
the held-out split is never crossed, and the production chain keeps stems summing to the mix.

They need Debian's sample packages (`.ci/run` installs them) and skip, naming what is
missing, where they are absent.
"""

import numpy as np
import pytest

from models.training.synth import library
from models.training.synth.fluid import ToolMissing

SR = 44100


def db(x) -> float:
    return float(20 * np.log10(np.sqrt(np.mean(np.square(x))) + 1e-12))


def need(*packages):
    for p in packages:
        if not library.available(p):
            pytest.skip(f"Debian package {p} is not installed (.ci/run installs it)")


def f0_of(y: np.ndarray) -> float:
    """Median f0 of the voiced frames (WORLD's DIO + StoneMask)."""
    import pyworld as pw
    y = np.ascontiguousarray(y, dtype=np.float64)
    f0, t = pw.dio(y, SR, f0_floor=50.0, f0_ceil=1000.0, frame_period=5.0)
    f0 = pw.stonemask(y, f0, t, SR)
    return float(np.median(f0[f0 > 0]))


def test_split_rule_is_stable_and_disjoint():
    names = [f"file{i}.wav" for i in range(2000)]
    test = [n for n in names if library.held_out(n)]
    assert 0.15 < len(test) / len(names) < 0.25
    assert test == [n for n in names if library.split_of(n) == "test"]  # a pure function of the name


def test_recorded_words_make_phrases_of_one_speaker():
    need("ktuberling-data")
    from models.training.synth import words
    assert not set(words.languages("train")) & set(words.TEST_LANGUAGES)
    assert set(words.languages("test")) == set(words.TEST_LANGUAGES)
    rng = np.random.default_rng(0)
    y = words.phrase_line(rng, 4.0, words.languages("train")[0])
    assert y.shape == (4 * SR,)
    assert -40 < db(y) < -20  # words at 0.05 of unit RMS, with pauses between them
    active = np.mean(np.abs(y) > 1e-3)
    assert 0.3 < active < 0.95, "phrases must have both words and pauses"


@pytest.mark.parametrize("engine", ["flite", "festival", "espeak"])
def test_every_speech_synthesizer_reads_a_sentence(engine):
    from models.training.synth import tts
    try:
        tts.check()
    except ToolMissing as e:
        pytest.skip(str(e))
    voices = [v for v in tts.voices("train") if v.engine == engine]
    if not voices:
        pytest.skip(f"no {engine} voice installed")
    y = tts.read_aloud(np.random.default_rng(1), voices[0], 3.0)
    assert y.shape == (3 * SR,)
    assert -34 < db(y) < -22  # sentences at 0.05 RMS each, with pauses
    assert np.abs(y).max() > 10 ** (-30 / 20)


def test_held_out_voices_never_reach_training():
    from models.training.synth import tts
    train, test = tts.voices("train"), tts.voices("test")
    assert not {v.speaker for v in train} & {v.speaker for v in test}
    assert all(tts.is_held_out(v) for v in test) and not any(tts.is_held_out(v) for v in train)


def test_training_speech_clips_use_only_training_speakers():
    need("ktuberling-data")
    from models.training.synth import speech, tts, words
    held = tts.HELD_OUT | {f"words:{lang}" for lang in words.TEST_LANGUAGES}
    for seed in range(6):
        _, info = speech.render_clip(100 + seed, 1.5, split="train")
        name = info["speaker"].split("@")[0]  # words replayed at another speed are named words:LANG@FACTOR
        assert name not in held and not name.endswith(tts.HELD_OUT_ESPEAK)


def test_varispeed_moves_pitch_and_length_together():
    """A replayed word is another speaker's pitch, not a time-stretch: 10 % faster is 10 % higher
    and 10 % shorter."""
    from models.training.synth import speech
    sr = 44100
    x = np.sin(2 * np.pi * 200.0 * np.arange(sr) / sr)
    y = speech.varispeed(x, 1.1)
    assert abs(y.size - sr / 1.1) < 2
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    peak_hz = np.argmax(spectrum) * sr / y.size
    assert abs(peak_hz - 220.0) < 2.0


@pytest.mark.parametrize("kind", ["events", "loops", "ambience", "babble", "music", "stationary", "crackle"])
def test_every_noise_source_renders_unit_level_noise(kind):
    need("sonic-pi-samples", "lmms-common", "ktuberling-data")
    from models.training.synth import noises
    for split in ("train", "test"):
        y = noises.layer(np.random.default_rng(2), kind, 2 * SR, split)
        assert y.shape == (2 * SR,) and np.all(np.isfinite(y))
        assert abs(db(y)) < 0.01  # unit RMS: the scene mixes layers at drawn levels
        assert np.std(np.diff(y)) > 1e-4  # not a constant


def test_noise_recordings_are_split_by_file():
    need("sonic-pi-samples", "lmms-common")
    from models.training.synth import noises
    for kind in ("events", "loops", "ambience"):
        train, test = set(noises._pool(kind, "train")), set(noises._pool(kind, "test"))
        assert train and test and not train & test


def test_speech_clip_hits_the_requested_snr_and_is_deterministic():
    need("ktuberling-data")
    from models.training.synth import speech
    stems, info = speech.render_clip(3, 3.0, snr_db=5.0, split="test")
    s, n = stems["speech"].astype(np.float64), stems["noise"].astype(np.float64)
    assert abs(10 * np.log10(np.sum(s ** 2) / np.sum(n ** 2)) - 5.0) < 0.05
    assert np.abs(s + n).max() <= 10 ** (-0.5 / 20) + 1e-6
    again, _ = speech.render_clip(3, 3.0, snr_db=5.0, split="test")
    np.testing.assert_array_equal(stems["speech"], again["speech"])
    np.testing.assert_array_equal(stems["noise"], again["noise"])


def test_real_speech_clips_are_recorded_words_over_recorded_noise():
    need("ktuberling-data", "sonic-pi-samples", "lmms-common")
    from models.training.synth import speech, words
    for seed in range(4):
        _, info = speech.render_clip(50 + seed, 2.0, snr_db=0.0, split="test", real=True)
        assert info["speaker"].split(":")[1] in words.TEST_LANGUAGES
        assert set(info["noise"]) <= set(speech.REAL_NOISE)
        assert not info["room"] and info["band_limit_hz"] is None


def test_room_response_decays_at_its_rt60():
    from models.training.synth import rooms
    ir = rooms.impulse_response(np.random.default_rng(0), rt60=0.6, drr_db=0.0)[0]
    edc = np.cumsum(ir[::-1] ** 2)[::-1]
    edc_db = 10 * np.log10(edc / edc[0])
    t5, t25 = np.argmax(edc_db < -5) / SR, np.argmax(edc_db < -25) / SR
    rt60 = 3 * (t25 - t5)  # T20 extrapolated to 60 dB
    assert 0.35 < rt60 < 0.85


def test_drum_kits_play_recorded_hits_and_hold_kits_out():
    need("hydrogen-drumkits")
    from models.training.synth import compose, drumkit
    train, test = {k.name for k in drumkit.kits("train")}, {k.name for k in drumkit.kits("test")}
    assert len(train) >= 8 and set(drumkit.TEST_KITS) <= test and not train & test
    rng = np.random.default_rng(4)
    song = compose.new_song(rng, 4.0)
    kit = next(k for k in drumkit.kits("train") if k.name == "ColomboAcousticDrumkit")  # a kit of hydrogen-drumkits, the package needed above
    y = drumkit.render(rng, song, 4.0, kit)
    assert y.shape == (2, 4 * SR)
    assert np.abs(y).max() > 0.05
    # hits: the envelope's loud frames recur at least once per beat
    env = np.abs(y).max(axis=0)[: int(4 * SR) // 441 * 441].reshape(-1, 441).max(axis=1)
    loud = np.flatnonzero(env > 0.3 * env.max())
    assert len(np.unique(loud // int(song.beat * 100))) >= int(4.0 / song.beat) - 2


def test_freepats_notes_sound_at_their_pitch():
    from models.training.synth import freepats
    patches = freepats.patches("train", range(0, 8))
    if not patches:
        pytest.skip("Debian package freepats is not installed")
    y = freepats.play(patches[0], 57, 1.0)  # A3, 220 Hz
    assert np.abs(y).max() > 0.05
    assert abs(f0_of(y[: SR]) / 220.0 - 1) < 0.03


def test_singer_sings_recorded_words_on_the_melody():
    need("ktuberling-data")
    from models.training.synth import singer, voice
    rng = np.random.default_rng(5)
    next_syllable, name = singer.syllable_source(rng, "train", real=True)
    assert name.startswith("words:")
    y, onset = voice.sing_features(rng, next_syllable(), 0.8, 60)  # C4, 261.6 Hz
    assert db(y) > -30
    start = int((onset + 0.2) * SR)  # past the scoop into the note
    assert abs(f0_of(y[start:start + int(0.4 * SR)]) / 261.63 - 1) < 0.04


def test_production_chain_keeps_stems_summing_and_limits_the_mix():
    from models.training.synth import production
    rng = np.random.default_rng(6)
    t = np.arange(4 * SR) / SR
    stems = {"a": np.stack([np.sin(2 * np.pi * 110 * t)] * 2) * 0.3,
             "b": rng.standard_normal((2, 4 * SR)) * np.exp(-(t % 0.5) * 8) * 0.3}
    for seed in range(4):
        out, info = production.master(np.random.default_rng(seed), {k: v.copy() for k, v in stems.items()})
        mix = out["a"] + out["b"]
        if "mp3_quality" not in info:
            assert np.abs(mix).max() <= 10 ** (-0.1 / 20) + 1e-9  # the limiter's ceiling holds
            assert abs(production.loudness(mix) - info["lufs_target"]) < 2.5
        for k in out:
            assert out[k].shape == stems[k].shape and np.all(np.isfinite(out[k]))


def test_limiter_gain_never_lets_a_peak_through():
    from models.training.synth import production
    rng = np.random.default_rng(7)
    mix = rng.standard_normal((2, SR)) * 0.2
    mix[:, 1000] = 3.0
    g = production.limiter_gain(mix, 0.9)
    assert np.abs(mix * g).max() <= 0.9 + 1e-12
    assert g[SR // 2] > 0.99  # far from the peak, the gain is back to unity where no need


def test_music_clip_is_deterministic_sums_and_has_no_silent_stem():
    need("hydrogen-drumkits", "ktuberling-data", "sonic-pi-samples")
    from models.training.synth import music
    a, info = music.render_clip(7, 4.0)
    b, _ = music.render_clip(7, 4.0)
    assert list(a) == ["vocals", "drums", "bass", "instruments", "fx"]
    for name in a:
        assert a[name].shape == (2, 4 * SR) and a[name].dtype == np.float32
        np.testing.assert_array_equal(a[name], b[name])
        assert 20 * np.log10(np.abs(a[name]).max()) > -40, f"{name} is silent"
    mix = sum(a.values())
    assert np.abs(mix).max() <= 0.99 + 1e-6  # representable, after the mastering chain
    assert not np.array_equal(a["vocals"], music.render_clip(8, 4.0)[0]["vocals"])


def test_real_music_clips_use_held_out_recordings():
    need("hydrogen-drumkits", "ktuberling-data", "sonic-pi-samples")
    from models.training.synth import drumkit, music, words
    for seed in range(2):
        _, info = music.render_clip(900 + seed, 3.0, split="test", real=True)
        if info["drums"].startswith("kit:"):
            assert info["drums"][4:] in drumkit.TEST_KITS
        assert info["singer"].startswith("words:") and info["singer"][6:] in words.TEST_LANGUAGES


def need_prompts():
    from models.training.synth import prompts
    if not prompts.available():
        pytest.skip(f"no telephone prompts under {prompts.ROOT} (.ci/run installs {prompts.PACKAGES})")
    return prompts


def test_every_prompt_speaker_renders_real_speech_at_the_words_level():
    prompts = need_prompts()
    assert len(prompts.speakers()) == 5  # en, es, fr, it, ru; the short-named links are not counted twice
    for i, name in enumerate(prompts.speakers()):
        y = prompts.phrase_line(np.random.default_rng(i), 4.0, name)
        assert y.shape == (4 * SR,)
        assert -40 < db(y) < -20, name  # as words.phrase_line: voiced at 0.05 of unit RMS, with pauses
        active = np.mean(np.abs(y) > 1e-3)
        assert 0.3 < active < 0.95, name
        spectrum = np.abs(np.fft.rfft(y)) ** 2
        above = spectrum[int(8500 * y.size / SR):].sum() / spectrum.sum()
        assert above < 1e-3, name  # a 16 kHz recording: nothing above its band


def test_every_pooled_prompt_holds_a_voice():
    """A training draw may land on any prompt; one empty file (Debian ships one) stopped a corpus render."""
    prompts = need_prompts()
    for name, files in prompts._pools().items():
        for path in files:
            y = prompts.prompt(path)
            assert y.size > 0.1 * SR and np.isfinite(y).all(), path


def test_a_prompt_voiced_clip_is_band_limited_noise_and_all():
    """Full-band noise under an 8 kHz voice would teach "all above 8 kHz is noise"."""
    prompts = need_prompts()
    from models.training.synth import speech
    seen = 0
    for seed in range(40):
        stems, info = speech.render_clip(300 + seed, 2.0, split="train")
        if not info["speaker"].startswith("prompts:") or info["snr_db"] is None:
            continue
        seen += 1
        assert info["band_limit_hz"] <= prompts.SOURCE_RATE / 2
        noise = stems["noise"][0].astype(np.float64)
        spectrum = np.abs(np.fft.rfft(noise)) ** 2
        assert spectrum[int(9000 * noise.size / SR):].sum() < 1e-4 * spectrum.sum()  # under −40 dB
    assert seen >= 3  # a quarter of training clips


def test_test_clips_never_use_the_prompts():
    need_prompts()
    from models.training.synth import speech
    for seed in range(12):
        _, info = speech.render_clip(9_500_000 + seed, 1.0, snr_db=0.0, split="test")
        assert not info["speaker"].startswith("prompts:")


def test_the_prompts_channel_leaves_white_noise_nothing_above_its_band():
    from models.training.synth import prompts
    x = np.random.default_rng(0).standard_normal(4 * SR)
    y = prompts.at_source_rate(x)
    assert y.shape == x.shape
    spectrum = np.abs(np.fft.rfft(y)) ** 2
    f = np.fft.rfftfreq(y.size, 1 / SR)
    assert spectrum[f >= 8500].sum() < 10 ** -4.5 * spectrum.sum()  # the prompts hold under −42 dB there
    assert spectrum[(f > 500) & (f < 6000)].sum() > 0.5 * spectrum.sum()  # the band itself passes
