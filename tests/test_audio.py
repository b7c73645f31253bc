"""Decoding real files of every supported format, and refusing every kind of bad input."""

import io
import struct
from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from scipy.signal import resample_poly

from audio_fixtures import FORMATS, SR, encode, encode_av, music_like, tone
from models import audio


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_each_format_decodes_to_44k1_stereo(fmt):
    rate = FORMATS[fmt][2]
    x = music_like(3.0, rate)
    y = audio.decode(encode(x, rate, fmt))
    assert y.dtype == np.float32 and y.shape[0] == 2
    # lossy codecs add encoder delay/padding; the length must still be about 3 s
    assert abs(y.shape[1] - 3 * SR) < 0.1 * SR
    if fmt in ("wav", "flac"):
        assert y.shape[1] == 3 * SR
        np.testing.assert_allclose(y, x.T, atol=1e-4)


def test_mono_is_duplicated_not_normalized():
    x = tone(440, 1.0, amp=0.1)
    y = audio.decode(encode(x[:, None], SR, "flac"))
    np.testing.assert_array_equal(y[0], y[1])
    assert abs(np.abs(y).max() - 0.1) < 1e-3  # level untouched: never normalized


@pytest.mark.parametrize("rate", [48000, 22050])
def test_other_rates_are_resampled_polyphase(rate):
    x = music_like(2.0, rate)
    y = audio.decode(encode(x, rate, "wav"))
    ratio = Fraction(SR, rate)
    expected = resample_poly(sf.read(io.BytesIO(encode(x, rate, "wav")), dtype="float32")[0].T,
                             ratio.numerator, ratio.denominator, axis=1)
    assert y.shape == expected.shape == (2, int(np.ceil(x.shape[0] * ratio)))
    np.testing.assert_allclose(y, expected, atol=1e-6)


def test_streaming_blocks_equal_whole_file_resampling(tmp_path):
    x = music_like(7.0, 48000, seed=3)
    path = tmp_path / "long.wav"
    sf.write(path, x, 48000, subtype="FLOAT")
    blocks = list(audio.iter_decode(path, block_frames=10007))
    assert len(blocks) > 5
    whole = resample_poly(x.T, 147, 160, axis=1)
    np.testing.assert_allclose(np.concatenate(blocks, axis=1), whole, atol=1e-6)


def test_surround_downmix_rule():
    n = 100
    ch = np.zeros((n, 6), np.float32)
    ch[:, 0], ch[:, 1], ch[:, 2], ch[:, 3], ch[:, 4], ch[:, 5] = 0.1, 0.2, 0.3, 0.9, 0.05, 0.07
    y = audio.decode(encode(ch, SR, "wav"))
    k = 10 ** (-3 / 20)
    np.testing.assert_allclose(y[0], 0.1 + k * 0.3 + k * 0.05, atol=1e-4)  # L + C + Ls, LFE dropped
    np.testing.assert_allclose(y[1], 0.2 + k * 0.3 + k * 0.07, atol=1e-4)


def _refused(data, code):
    with pytest.raises(audio.AudioError) as info:
        audio.decode(data)
    assert info.value.code == code
    assert str(info.value)  # a sentence for people
    return info.value


def test_empty_upload():
    _refused(b"", "empty")


def test_not_audio():
    _refused(b"<html>definitely not a song</html>" * 50, "unsupported")


def test_zero_frames():
    buf = io.BytesIO()
    sf.write(buf, np.zeros((0, 2), np.float32), SR, format="WAV", subtype="PCM_16")
    _refused(buf.getvalue(), "no_audio")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad):
    x = music_like(0.5)
    x[1000, 1] = bad
    buf = io.BytesIO()
    sf.write(buf, x, SR, format="WAV", subtype="FLOAT")
    _refused(buf.getvalue(), "non_finite")


def test_zero_hertz_header():
    data = bytearray(encode(music_like(0.1), SR, "wav"))
    data[24:28] = struct.pack("<I", 0)
    _refused(bytes(data), "bad_sample_rate")


def test_six_hours_is_refused_from_the_header():
    data = bytearray(encode(tone(100, 1.0, 8000)[:, None], 8000, "flac"))
    # STREAMINFO's total-samples field (low 36 bits of bytes 18..25) claims 6 h at 8 kHz
    packed = int.from_bytes(data[18:26], "big")
    packed = (packed & ~((1 << 36) - 1)) | (6 * 3600 * 8000)
    data[18:26] = packed.to_bytes(8, "big")
    err = _refused(bytes(data), "too_long")
    assert "360.0 min" in str(err)


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_truncated_files(fmt):
    rate = FORMATS[fmt][2]
    data = encode(music_like(3.0, rate), rate, fmt)
    with pytest.raises(audio.AudioError) as info:
        audio.decode(data[: len(data) // 2])
    assert info.value.code in ("truncated", "corrupt")


def test_plan_limit_is_checked_before_decoding():
    data = encode(music_like(2.0), SR, "flac")
    with pytest.raises(audio.AudioError) as info:
        audio.probe(data, max_seconds=1.0)
    assert info.value.code == "too_long"


# -- what FFmpeg (PyAV) decodes: inputs made here, in the test, with PyAV's encoders ----------

AV_FORMATS = {  # name: (container, codec, sample rate, bitrate, lossless)
    "m4a-aac": ("ipod", "aac", SR, None, False),
    "m4a-alac": ("ipod", "alac", SR, None, True),
    "wma": ("asf", "wmav2", SR, 128000, False),
    "adts-aac": ("adts", "aac", 48000, None, False),
    "webm-opus": ("webm", "libopus", 48000, None, False),
}


@pytest.mark.parametrize("name", list(AV_FORMATS))
def test_ffmpeg_formats_decode_to_44k1_stereo(name):
    container, codec, rate, bitrate, lossless = AV_FORMATS[name]
    x = music_like(3.0, rate)
    data = encode_av(x, rate, container, codec, bitrate=bitrate)
    info = audio.probe(data)
    assert info.sample_rate == rate and info.channels == 2
    y = audio.decode(data)
    assert y.dtype == np.float32 and y.shape[0] == 2
    assert abs(y.shape[1] - 3 * SR) < 0.1 * SR  # priming and padding of lossy codecs
    if lossless:
        assert info.format == "MP4" and info.subtype == "ALAC" and y.shape[1] == 3 * SR
        np.testing.assert_allclose(y, x.T, atol=1e-4)
    else:  # a lossy codec keeps the level
        assert abs(20 * np.log10(np.sqrt(np.mean(y ** 2)) / np.sqrt(np.mean(x ** 2)))) < 1.0


def test_a_videos_soundtrack(tmp_path):
    x = music_like(2.0)
    y = audio.decode(encode_av(x, SR, "mp4", "aac", video=True))
    assert abs(y.shape[1] - 2 * SR) < 0.1 * SR


def test_m4a_streams_in_blocks(tmp_path):
    path = tmp_path / "song.m4a"
    path.write_bytes(encode_av(music_like(5.0), SR, "ipod", "alac"))
    blocks = list(audio.iter_decode(path, block_frames=20000))
    assert len(blocks) > 5
    np.testing.assert_array_equal(np.concatenate(blocks, axis=1), audio.decode(path))


def test_the_extension_does_not_matter(tmp_path):
    m4a = encode_av(music_like(1.0), SR, "ipod", "aac")
    (tmp_path / "really-an-m4a.mp3").write_bytes(m4a)
    assert audio.probe(tmp_path / "really-an-m4a.mp3").format == "MP4"
    (tmp_path / "really-a-wav.m4a").write_bytes(encode(music_like(1.0), SR, "wav"))
    assert audio.decode(tmp_path / "really-a-wav.m4a").shape == (2, SR)
    (tmp_path / "text.m4a").write_bytes(b"not a song, whatever the name says\n" * 40)
    with pytest.raises(audio.AudioError) as info:
        audio.decode(tmp_path / "text.m4a")
    assert info.value.code == "unsupported" and "AAC/M4A" in str(info.value)


def test_video_without_audio():
    err = _refused(encode_av(music_like(1.0), SR, "mp4", None, video=True), "no_audio_stream")
    assert "no audio track" in str(err)


def test_truncated_m4a_without_its_index():
    data = encode_av(music_like(3.0), SR, "ipod", "aac")  # index (moov) at the end, as FFmpeg writes
    assert "incomplete" in str(_refused(data[: len(data) // 2], "truncated"))


@pytest.mark.parametrize("container,codec,bitrate", [("ipod", "aac", None), ("asf", "wmav2", 128000)])
def test_truncated_audio_data(tmp_path, container, codec, bitrate):
    options = {"movflags": "faststart"} if container == "ipod" else None  # index first: the audio is cut
    data = encode_av(music_like(3.0), SR, container, codec, bitrate=bitrate,
                     path=tmp_path / f"x.{container}", options=options)
    with pytest.raises(audio.AudioError) as info:
        audio.decode(data[: len(data) // 2])
    assert info.value.code in ("truncated", "corrupt")


def test_m4a_plan_limit_is_checked_before_decoding():
    data = encode_av(music_like(2.0), SR, "ipod", "aac")
    with pytest.raises(audio.AudioError) as info:
        audio.probe(data, max_seconds=1.0)
    assert info.value.code == "too_long"


def test_playlists_that_name_other_files_are_refused(tmp_path):
    (tmp_path / "secret.wav").write_bytes(encode(music_like(1.0), SR, "wav"))
    for playlist in (b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1,\nsecret.wav\n#EXT-X-ENDLIST\n",
                     b"ffconcat version 1.0\nfile secret.wav\n"):
        (tmp_path / "list.m3u8").write_bytes(playlist)
        with pytest.raises(audio.AudioError) as info:
            audio.decode(tmp_path / "list.m3u8")
        assert info.value.code == "unsupported"


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(audio.AudioError) as info:
        audio.probe(tmp_path / "nope.m4a")
    assert info.value.code == "not_found"
    with pytest.raises(audio.AudioError) as info:
        audio.probe(tmp_path)
    assert info.value.code == "unreadable"
