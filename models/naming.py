"""Names of output files: a track's name from its file name, sanitized, and the
`--filename` template. Shared by the CLI and the service's download names.

A sanitized name is safe as one path component on Linux, macOS and Windows: no separators,
no control characters, none of Windows' reserved characters or device names, no leading or
trailing dots and spaces, at most `MAX_NAME` characters. Letters of any script are kept.
"""

from __future__ import annotations

import re
import string
import unicodedata
from pathlib import PurePosixPath, PureWindowsPath

MAX_NAME = 120
DEFAULT_TEMPLATE = "{track}/{stem}.{ext}"
FIELDS = ("track", "stem", "ext")
_UNSAFE = re.compile(r'[\x00-\x1f\x7f<>:"/\\|?*]+')
_SPACES = re.compile(r"\s+")
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def sanitize(name: str, fallback: str = "audio") -> str:
    """`name` made safe as one file-name component ('' or nothing usable → `fallback`)."""
    name = unicodedata.normalize("NFC", name)
    name = _SPACES.sub(" ", _UNSAFE.sub("_", name)).strip(" .")
    if len(name) > MAX_NAME:
        name = name[:MAX_NAME].rstrip(" .")
    if not name.strip("_"):
        return fallback
    return f"_{name}" if name.split(".")[0].upper() in _RESERVED else name


def track_name(filename: str | None, fallback: str = "audio") -> str:
    """The song's name from an upload's or a path's file name: its last component without
    the extension, sanitized. Browsers on Windows may send 'C:\\…\\song.mp3'."""
    if not filename:
        return fallback
    base = PureWindowsPath(PurePosixPath(filename).name).name
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    return sanitize(stem, fallback)


def download_name(track: str | None, stem: str, ext: str) -> str:
    """`{song name}-{stem}.{ext}`, the name a downloaded stem is saved under."""
    return f"{sanitize(track) if track else 'audio'}-{stem}.{ext}"


class TemplateError(ValueError):
    pass


def check_template(template: str) -> str:
    """Refuse a template with unknown fields, an absolute path or '..', or no {stem} (every
    stem would overwrite the last)."""
    try:
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as e:
        raise TemplateError(f"--filename {template!r}: {e}") from None
    unknown = fields - set(FIELDS)
    if unknown:
        raise TemplateError(f"--filename {template!r}: unknown field {{{sorted(unknown)[0]}}}; "
                            f"use {', '.join('{' + f + '}' for f in FIELDS)}")
    if "stem" not in fields:
        raise TemplateError(f"--filename {template!r} needs {{stem}}, or every stem overwrites the last")
    parts = PurePosixPath(template.replace("\\", "/")).parts
    if template.startswith(("/", "\\")) or ".." in parts:
        raise TemplateError(f"--filename {template!r} must stay inside the output folder")
    return template


def render(template: str, *, track: str, stem: str, ext: str) -> str:
    """A relative path from the template; each field's value is sanitized on its own, so a
    track name can never add a folder."""
    values = {"track": sanitize(track), "stem": sanitize(stem), "ext": sanitize(ext)}
    return template.format(**values)
