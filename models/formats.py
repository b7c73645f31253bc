"""Output formats and bitrates: the policy, without the encoders (light enough for argument
parsers and the HTTP layer to import)."""

from __future__ import annotations

# libsndfile (container, subtype) of each format
SUBTYPES = {"wav": ("WAV", "FLOAT"), "flac": ("FLAC", "PCM_24"),
            "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
FORMATS: tuple[str, ...] = tuple(SUBTYPES)
MEDIA_TYPES = {"wav": "audio/wav", "flac": "audio/flac", "mp3": "audio/mpeg", "opus": "audio/ogg"}
CLIPPING = ("flac",)  # formats whose integer samples clip beyond ±1
DEFAULT_BITRATE = {"mp3": 320, "opus": 160}  # kbps
MP3_BITRATES = (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)  # MPEG-1 Layer III
OPUS_BITRATES = (12, 512)  # kbps for a stereo stream: libopus's 6–256 kbps per channel
OPUS_RATE = 48000


class EncodingError(ValueError):
    """An output format or bitrate we cannot write; the message is for people."""


def check_encoding(fmt: str, bitrate: int | None = None) -> int | None:
    """Validate a format and bitrate; return the bitrate to use (kbps; None for lossless)."""
    if fmt not in SUBTYPES:
        raise EncodingError(f"unknown format {fmt!r}; use {', '.join(FORMATS)}")
    if fmt not in DEFAULT_BITRATE:
        if bitrate is not None:
            raise EncodingError(f"a bitrate applies to mp3 and opus only, not to lossless {fmt}")
        return None
    if bitrate is None:
        return DEFAULT_BITRATE[fmt]
    if fmt == "mp3" and bitrate not in MP3_BITRATES:
        raise EncodingError(f"mp3 bitrate {bitrate} kbps is not an MPEG-1 Layer III rate; use one of "
                            f"{', '.join(map(str, MP3_BITRATES))}")
    if fmt == "opus" and not OPUS_BITRATES[0] <= bitrate <= OPUS_BITRATES[1]:
        raise EncodingError(f"opus bitrate {bitrate} kbps is outside {OPUS_BITRATES[0]}–{OPUS_BITRATES[1]} kbps")
    return bitrate
