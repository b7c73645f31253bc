"""`locoserve separate` driven as a user would: a subprocess on real files (several files, a
folder, a bad file among good ones, an M4A made here), real encoders, real exit statuses."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from audio_fixtures import SR, encode_av, music_like, write


def locoserve(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "serve_app.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


FAST = ["--random-weights", "--threads", "1"]


def frames(path):
    info = sf.info(path)
    return info.frames, info.samplerate


def assert_one_line_errors(stderr: str):
    assert "Traceback" not in stderr and "Error:" not in stderr.replace("AudioError", "")
    assert "falling back" not in stderr and "CPU" not in stderr  # nobody asked for a GPU


def test_a_batch_with_a_folder_an_m4a_and_bad_files(tmp_path):
    lib = tmp_path / "lib"
    (lib / "live").mkdir(parents=True)
    write(lib / "song.wav", music_like(1.5))  # the second of that name: "song (2)"
    write(lib / "live" / "song.flac", music_like(1.2, seed=1), subtype="PCM_24")  # sorted first: "song"
    (lib / "notes.txt").write_text("not audio, not even looked at")
    (lib / "broken.mp3").write_bytes(b"\xff\xfb\x90\x00" + b"garbage" * 500)
    (tmp_path / "memo.m4a").write_bytes(encode_av(music_like(2.0, seed=2), SR, "ipod", "aac"))
    out = tmp_path / "stems"
    r = locoserve("separate", lib, tmp_path / "memo.m4a", tmp_path / "missing.wav", "--out", out,
                  "--format", "mp3", "--bitrate", "128", "--json", *FAST)
    assert r.returncode == 1, r.stderr  # some failed
    assert_one_line_errors(r.stderr)
    errors = [line for line in r.stderr.splitlines() if line.startswith("locoserve: ")]
    assert len(errors) == 2
    assert "broken.mp3: not a recognised audio file" in errors[0]
    assert "missing.wav: no such file or folder" in errors[1]
    assert "3 of 5 files separated" in r.stderr and "failed:" in r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(records) == 5 and sum("error" in rec for rec in records) == 2
    expected = {"song": 1.2 * SR, "song (2)": 1.5 * SR, "memo": 2.0 * SR}
    for track, n in expected.items():
        for stem in ("vocals", "instrumental"):
            got, rate = frames(out / track / f"{stem}.mp3")
            assert rate == SR
            if track == "memo":  # AAC's priming: about the input's length
                assert abs(got - n) < 0.05 * SR
            else:
                assert got == round(n)  # gapless mp3: to the sample
    assert sorted(p.name for p in out.iterdir()) == ["memo", "song", "song (2)"]  # no staging left over
    ok = next(rec for rec in records if rec["file"].endswith("memo.m4a"))
    assert ok["output"]["format"] == "mp3" and ok["output"]["bitrate_kbps"] == 128
    assert ok["input"]["format"] == "MP4" and ok["input"]["subtype"] == "AAC"


def test_two_stems_opus_with_a_flat_template(tmp_path):
    src = write(tmp_path / "Take 5.wav", music_like(1.3))
    r = locoserve("separate", src, "--two-stems", "vocals", "--format", "opus", "--out", tmp_path / "o",
                  "--filename", "{track} - {stem}.{ext}", *FAST)
    assert r.returncode == 0, r.stderr
    assert_one_line_errors(r.stderr)
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["Take 5 - instrumental.opus",
                                                                 "Take 5 - vocals.opus"]
    assert frames(tmp_path / "o" / "Take 5 - vocals.opus") == (round(1.3 * 48000), 48000)
    assert "Take 5.wav → " in r.stdout


def test_stems_shortcut_picks_the_five_stem_model_and_keeps_only_what_was_asked(tmp_path):
    src = write(tmp_path / "beat.wav", music_like(1.0))
    r = locoserve("separate", src, "--stems", "drums,bass", "--out", tmp_path / "o", "--format", "flac", *FAST)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "o" / "beat").iterdir()) == ["bass.flac", "drums.flac"]
    x, _ = sf.read(tmp_path / "o" / "beat" / "drums.flac")
    assert x.shape == (SR, 2)


@pytest.mark.parametrize("args,message", [
    (["--two-stems", "drums"], "no model splits drums from the rest"),
    (["--stems", "vocals,guitar"], "unknown stem 'guitar'"),
    (["--stems", "drums", "--variant", "2stem"], "the 2stem model has vocals, instrumental"),
    (["--filename", "{track}.{ext}"], "needs {stem}"),
    (["--filename", "../{stem}.{ext}"], "inside the output folder"),
    (["--format", "mp3", "--bitrate", "100"], "not an MPEG-1 Layer III rate"),
    (["--format", "wav", "--bitrate", "320"], "lossless"),
    (["--variant", "speech", "--shifts", "0"], "--shifts must be at least 1"),
])
def test_usage_errors_are_one_line_and_exit_2(tmp_path, args, message):
    src = write(tmp_path / "a.wav", music_like(0.5))
    r = locoserve("separate", src, "--out", tmp_path / "o", *args, *FAST)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "o").exists()


def test_the_device_is_said_once_and_only_when_a_gpu_was_asked_for(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this checks the message of a machine without a GPU")
    a, b = write(tmp_path / "a.wav", music_like(0.5)), write(tmp_path / "b.wav", music_like(0.5))
    r = locoserve("separate", a, b, "--out", tmp_path / "o", "--device", "cuda", *FAST)
    assert r.returncode == 0, r.stderr
    said = [line for line in r.stderr.splitlines() if "CPU" in line]
    assert len(said) == 1 and said[0].startswith("locoserve: running on the CPU: ")
    assert "Traceback" not in r.stderr


def test_version():
    r = locoserve("--version")
    assert r.returncode == 0 and r.stdout.startswith("locoserve ") and r.stdout.split()[1][0].isdigit()


def test_an_empty_folder_and_nothing_else(tmp_path):
    (tmp_path / "empty").mkdir()
    r = locoserve("separate", tmp_path / "empty", "--out", tmp_path / "o", *FAST)
    assert r.returncode == 1 and "no audio files in this folder" in r.stderr
    assert "Traceback" not in r.stderr


def test_outputs_are_not_searched_as_inputs(tmp_path):
    write(tmp_path / "a.wav", music_like(0.5))
    first = locoserve("separate", tmp_path, "--out", tmp_path / "separated", *FAST)
    again = locoserve("separate", tmp_path, "--out", tmp_path / "separated", *FAST)
    assert first.returncode == again.returncode == 0, again.stderr
    assert sorted(p.name for p in (tmp_path / "separated").iterdir()) == ["a"]
    assert again.stdout.count("→") == 1


def test_separated_stems_sum_to_the_input(tmp_path):
    x = music_like(1.0)
    r = locoserve("separate", write(tmp_path / "mix.wav", x), "--out", tmp_path / "o", *FAST)
    assert r.returncode == 0, r.stderr
    stems = [sf.read(tmp_path / "o" / "mix" / f"{s}.wav", dtype="float32")[0] for s in ("vocals", "instrumental")]
    # random weights give each stem half the mix; the vocals' 30 Hz high-pass barely touches it
    np.testing.assert_allclose(stems[1], x / 2, atol=2e-6)
