"""A finished job's files besides the stems: the browser previews and peaks (written by the
model replica right after the stems), and the ZIP of all stems (streamed on request).

Layout of a job's result folder: `{stem}.{format}` (the stems), `preview/{stem}.mp3`, and
`peaks.json` ({"format", "bitrate_kbps", "buckets", "stems": {stem: {"frames", "sample_rate",
"min", "max"}}}).
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

from models.preview import PEAK_BUCKETS, PREVIEW_BITRATE, PREVIEW_FORMAT, preview

PREVIEW_DIR = "preview"
PEAKS_FILE = "peaks.json"
COPY_BLOCK = 1 << 20


def preview_path(result_dir: Path, stem: str) -> Path:
    return result_dir / PREVIEW_DIR / f"{stem}.{PREVIEW_FORMAT}"


def write_previews(result_dir: Path, stems: dict[str, Path]) -> dict:
    """Preview and peaks of every stem; returns what the job's metadata records about them."""
    (result_dir / PREVIEW_DIR).mkdir(exist_ok=True)
    peaks = {name: preview(path, preview_path(result_dir, name)) for name, path in stems.items()}
    doc = {"format": PREVIEW_FORMAT, "bitrate_kbps": PREVIEW_BITRATE, "buckets": PEAK_BUCKETS, "stems": peaks}
    # written whole, then renamed: a reader never sees half a document
    tmp = result_dir / f".{PEAKS_FILE}.tmp"
    tmp.write_text(json.dumps(doc, separators=(",", ":")))
    os.replace(tmp, result_dir / PEAKS_FILE)
    return {"format": PREVIEW_FORMAT, "bitrate_kbps": PREVIEW_BITRATE, "buckets": PEAK_BUCKETS}


class _Pipe:
    """A write-only file for zipfile: it has no tell(), so zipfile writes a streamable ZIP
    (sizes in data descriptors after each member), and what it wrote is taken out in pieces."""

    def __init__(self):
        self.chunks: list[bytes] = []

    def write(self, b) -> int:
        self.chunks.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out, self.chunks = b"".join(self.chunks), []
        return out


def zip_stream(members: Iterable[tuple[str, Path]]) -> Iterator[bytes]:
    """A ZIP of (name in the archive, file) pairs, produced as it is sent: stored, not
    deflated (encoded audio does not shrink, and float WAV hardly), zip64 so that members over
    4 GiB work; memory stays at one block whatever the size."""
    pipe = _Pipe()
    with zipfile.ZipFile(pipe, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        for arcname, path in members:
            with open(path, "rb") as src, z.open(arcname, "w", force_zip64=True) as dst:
                while block := src.read(COPY_BLOCK):
                    dst.write(block)
                    if out := pipe.take():
                        yield out
            if out := pipe.take():
                yield out
    if out := pipe.take():  # the central directory, written when the archive closes
        yield out
