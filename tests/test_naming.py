"""Output names: sanitized track names, download names and the --filename template."""

import tempfile
from pathlib import Path

import pytest

from models.naming import TemplateError, check_template, download_name, render, sanitize, track_name


@pytest.mark.parametrize("filename,expected", [
    ("My Song (live).mp3", "My Song (live)"),
    (str(Path(tempfile.gettempdir()) / "Music" / "Ünïcødé 歌.m4a"), "Ünïcødé 歌"),  # an absolute path
    ("C:\\Users\\ann\\Desktop\\demo.final.wav", "demo.final"),
    ('a<b>c:d"e|f?g*h.flac', "a_b_c_d_e_f_g_h"),
    ("line\nbreak\tand  spaces.ogg", "line_break_and spaces"),
    ("...hidden", "...hidden".strip(". ") or "audio"),
    ("CON.wav", "_CON"),
    ("", "audio"),
    (None, "audio"),
    ("../../etc/passwd", "passwd"),
    (".mp3", "mp3"),
])
def test_track_name(filename, expected):
    assert track_name(filename) == expected


def test_long_names_are_cut():
    assert len(sanitize("x" * 500)) == 120


def test_download_name():
    assert download_name("Song: part 1", "vocals", "mp3") == "Song_ part 1-vocals.mp3"
    assert download_name(None, "bass", "wav") == "audio-bass.wav"


def test_template_renders_each_field_sanitized():
    assert render("{track}/{stem}.{ext}", track="a/b", stem="vocals", ext="wav") == "a_b/vocals.wav"
    assert render("{track} - {stem}.{ext}", track="Song", stem="drums", ext="mp3") == "Song - drums.mp3"


@pytest.mark.parametrize("template,message", [
    ("{track}.{ext}", "needs {stem}"), ("{song}/{stem}.{ext}", "unknown field"),
    ("/abs/{stem}.{ext}", "inside"), ("../{stem}.{ext}", "inside"), ("{stem", "--filename")])
def test_bad_templates_are_refused(template, message):
    with pytest.raises(TemplateError, match=message):
        check_template(template)
