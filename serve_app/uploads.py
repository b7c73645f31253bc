"""Reading a multipart upload under a size cap, and the job options that come with it.

The cap is enforced twice: a declared Content-Length above it is refused at once, and the
body stream is counted as it arrives, so a chunked upload is cut off the moment it passes
the cap. Either way the caller gets 413 before the whole body has been buffered.

The body must also keep coming: no bytes for `idle_s`, or an average below `min_rate` bytes/s
once `grace_s` have passed, ends the upload with 408 (a slow sender would otherwise hold an
ingress slot for the proxy's whole request timeout).

The file never sits whole in the ingress's memory: as the multipart body is parsed, the file
part is written (hashed on the way) to a spool file beside the job inputs, a MiB at a time
off the event loop; the audio is checked and decoded from that file, and it becomes the
job's input by a rename. (Read whole and decoded whole, 4 parallel 143 MB uploads grew the
ingress by 3 GiB.) Only an `audio_url` download is held in memory, under the admission's
memory budget, until it is written to its spool file.

What Serve queues is outside this module: its proxy reads a body as fast as the client sends
it and the replica pulls it into an unbounded queue, so a body the ingress parses slower
than it arrives waits in memory (the ingress's or the proxy's); parsing here is quick so
that little does (tests/test_ingress_faults.py measures it).
"""

from __future__ import annotations

import asyncio
import codecs
import hashlib
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from python_multipart.multipart import FormParserError, MultipartParser, parse_options_header
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request

from models.formats import EncodingError, check_encoding

from .admission import Admission
from .waiting import parse_wait


class UploadError(Exception):
    def __init__(self, status: int, slug: str, detail: str, code: str | None = None):
        super().__init__(detail)
        self.status, self.slug, self.detail, self.code = status, slug, detail, code


class JobOptions(BaseModel):
    """Form fields of POST /api/audio/{separate,clean,enhance}; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    stems: int | None = None
    format: Literal["wav", "flac", "mp3", "opus"] = "wav"
    bitrate: int | None = None  # kbps, mp3 and opus only (default 320 and 160)
    normalize: Literal["peak", "loudness"] | None = None
    debug: bool = False
    wait: bool | float | None = None  # true, false or seconds (serve_app/waiting.py); None: not sent
    webhook: str | None = Field(default=None, max_length=2048)  # called when the job ends (serve_app/webhooks.py)

    @field_validator("wait", mode="before")
    @classmethod
    def _wait(cls, v):
        return parse_wait(v)

    @field_validator("stems")
    @classmethod
    def _stems(cls, v):
        if v is not None and v not in (2, 5):
            raise ValueError("stems must be 2 or 5")
        return v

    @model_validator(mode="after")
    def _bitrate(self):
        try:
            self.bitrate = check_encoding(self.format, self.bitrate)
        except EncodingError as e:
            raise ValueError(str(e)) from None
        return self

    @field_validator("normalize", mode="before")
    @classmethod
    def _normalize(cls, v):
        if isinstance(v, str):
            v = v.strip().lower()
            if v in ("", "false", "0", "no", "none", "off"):
                return None
            if v in ("true", "1", "yes", "on"):
                return "peak"
        return v


@dataclass(frozen=True)
class Pace:
    """How slowly a body may arrive (see the module's docstring)."""
    idle_s: float = 30.0
    min_rate: float = 16384.0  # bytes per second, on average over the whole body
    grace_s: float = 10.0


SPOOL_PREFIX = ".upload-"  # the spool files' names; the housekeeping deletes any left by a crash
WRITE_BATCH = 1 << 20  # file bytes parsed before they are written out (one thread hop each)
MAX_FIELDS = 20
MAX_FIELD_BYTES = 1 << 20  # a text field (the options are a few bytes; a webhook URL 2 kB)


@dataclass
class Upload:
    path: Path  # the spool file: the caller renames it into place, or `discard`s it
    size: int
    sha256: bytes  # of the file's bytes, for the idempotency fingerprint
    filename: str
    options: JobOptions

    def discard(self) -> None:
        """Delete the spool file unless it was renamed away (call it in a `finally`)."""
        self.path.unlink(missing_ok=True)


class SpoolFile:
    """A file in the spool folder, written in batches off the event loop and hashed on the way
    (fsynced when closed: it may become a job's input by a rename)."""

    def __init__(self, folder: Path):
        self.path = folder / f"{SPOOL_PREFIX}{uuid.uuid4().hex}.part"
        self.size, self._digest, self._file = 0, hashlib.sha256(), None
        self.pending: list[bytes] = []
        self.pending_bytes = 0

    def add(self, data: bytes) -> None:
        self.pending.append(data)
        self.pending_bytes += len(data)

    def take_batch(self) -> list[bytes]:
        """What `add` collected, for `write` (in a thread): the parser goes on collecting."""
        batch, self.pending, self.pending_bytes = self.pending, [], 0
        return batch

    def write(self, batch: list[bytes]) -> None:
        if self._file is None:
            self._file = os.fdopen(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb")
        for block in batch:
            self._digest.update(block)
            self._file.write(block)
            self.size += len(block)

    def close(self) -> tuple[Path, int, bytes]:
        self.write(self.take_batch())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self.sha256 = self._digest.digest()
        return self.path, self.size, self.sha256

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
        self.path.unlink(missing_ok=True)


def spool_bytes(data: bytes, folder: Path) -> tuple[Path, int, bytes]:
    """An audio_url download into a spool file, like an uploaded file."""
    f = SpoolFile(folder)
    try:
        f.add(data)
        return f.close()
    except BaseException:
        f.discard()
        raise


def _decode(raw: bytes, charset: str) -> str:
    try:
        return raw.decode(charset)
    except UnicodeDecodeError:
        return raw.decode("latin-1")


class _Multipart:
    """python-multipart's callbacks for a job request: small text fields kept (at most
    MAX_FIELDS, MAX_FIELD_BYTES each), the one file part handed to a SpoolFile as it is parsed.
    (Starlette's parser spools to a temporary file too, but with a thread hop per body chunk
    and a second copy to read it back; the ingress fell behind the proxy, which then queued
    the bodies in the ingress's memory.)"""

    def __init__(self, folder: Path, charset: str):
        self.folder, self.charset = folder, charset
        self.fields: dict[str, str] = {}
        self.file: SpoolFile | None = None
        self.file_field = self.filename = None
        self._headers: dict[bytes, bytes] = {}
        self._header, self._value = b"", b""
        self._data, self._into_file = bytearray(), False

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_part_data": self._part_data, "on_part_end": self._part_end,
                "on_header_field": self._header_field, "on_header_value": self._header_value,
                "on_header_end": self._header_end, "on_headers_finished": self._headers_finished}

    def _part_begin(self) -> None:
        self._headers, self._data, self._into_file = {}, bytearray(), False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header.lower()] = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise MultiPartException('The Content-Disposition header field "name" must be provided.')
        name = _decode(options[b"name"], self.charset)
        if b"filename" in options:
            if self.file is not None:
                raise MultiPartException("Too many files. Maximum number of files is 1.")
            self.file, self.file_field = SpoolFile(self.folder), name
            self.filename, self._into_file = _decode(options[b"filename"], self.charset), True
        elif len(self.fields) >= MAX_FIELDS:
            raise MultiPartException(f"Too many fields. Maximum number of fields is {MAX_FIELDS}.")
        self._name = name

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._into_file:
            self.file.add(data[start:end])
        else:
            if len(self._data) + end - start > MAX_FIELD_BYTES:
                raise MultiPartException(f"Part exceeded maximum size of {MAX_FIELD_BYTES // 1024}KB.")
            self._data += data[start:end]

    def _part_end(self) -> None:
        if not self._into_file:
            self.fields[self._name] = _decode(bytes(self._data), self.charset)


async def _read_multipart(request: Request, messages: Callable[[], Awaitable[dict]], folder: Path,
                          offload: Callable[..., Awaitable]) -> _Multipart:
    _, params = parse_options_header(request.headers["content-type"])
    if b"boundary" not in params:
        raise MultiPartException("Missing boundary in multipart.")
    charset = params.get(b"charset", b"utf-8").decode("latin-1")
    try:
        codecs.lookup(charset)
    except LookupError:
        charset = "latin-1"
    form = _Multipart(folder, charset)
    parser = MultipartParser(params[b"boundary"], form.callbacks())
    try:
        while True:
            message = await messages()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            if body := message.get("body", b""):
                parser.write(body)
                if form.file is not None and form.file.pending_bytes >= WRITE_BATCH:
                    await offload(form.file.write, form.file.take_batch())
            if not message.get("more_body", False):
                break
        parser.finalize()
        if form.file is not None:
            await offload(form.file.close)
        return form
    except BaseException as e:
        if form.file is not None:
            form.file.discard()
        if isinstance(e, FormParserError):
            raise MultiPartException("Invalid multipart data.") from e
        raise


async def read_upload(request: Request, max_bytes: int, pace: Pace | None = None,
                      admission: Admission | None = None,
                      fetch_url: Callable[[str], Awaitable[tuple[bytes, str]]] | None = None, *,
                      spool_dir: str | Path | None = None,
                      offload: Callable[..., Awaitable] = asyncio.to_thread) -> Upload:
    """The audio comes as the file `audio`, or as `audio_url` fetched by `fetch_url`
    (serve_app/outbound.py), under the same size cap; either way it ends in a spool file in
    `spool_dir` (the system's temporary folder if None). `offload` runs the blocking copy."""
    folder = Path(spool_dir or tempfile.gettempdir())
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        raise UploadError(415, "unsupported-media-type",
                          "send multipart/form-data with the audio file in a field named 'audio' (or its URL in "
                          "'audio_url')")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, "payload-too-large", f"the upload is {int(declared)} bytes; the limit is {max_bytes}")
    received = 0
    receive = request.receive
    pace = pace or Pace()
    started = time.monotonic()

    async def counted():
        nonlocal received
        try:
            message = await asyncio.wait_for(receive(), pace.idle_s)
        except TimeoutError:
            raise UploadError(408, "request-timeout", f"no part of the body arrived for {pace.idle_s:g} s") from None
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise UploadError(413, "payload-too-large", f"the upload exceeds the limit of {max_bytes} bytes")
            elapsed = time.monotonic() - started
            if elapsed > pace.grace_s and message.get("more_body") and received < pace.min_rate * elapsed:
                raise UploadError(408, "request-timeout", f"the body arrives at {received / elapsed:.0f} bytes/s; "
                                                          f"at least {pace.min_rate:.0f} are needed")
        return message

    spooled = None
    try:
        if ctype.startswith("multipart/form-data"):
            form = await _read_multipart(request, counted, folder, offload)
            fields, spooled = form.fields, form.file
        else:  # urlencoded: an audio_url and options, no file
            form = await Request(request.scope, counted).form(max_files=0, max_fields=MAX_FIELDS)
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
    except MultiPartException as e:
        raise UploadError(400, "bad-request", f"malformed multipart body: {e.message}") from e
    try:
        if spooled is not None and form.file_field != "audio":
            raise UploadError(422, "bad-request", f"a file is accepted only in the field 'audio', not "
                                                  f"'{form.file_field}'")
        url = fields.pop("audio_url", None)
        fields.pop("audio", None)  # a text field, not a file: said below as the file missing
        if spooled is not None and url is not None:
            raise UploadError(422, "bad-request", "send the audio as a file ('audio') or a URL ('audio_url'), not both")
        if spooled is None and not (url and fetch_url):
            raise UploadError(422, "bad-request", "the multipart field 'audio' with a file (or 'audio_url') is missing")
        try:
            options = JobOptions(**fields)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise UploadError(422, "bad-request", f"invalid options: {problems}") from None
        if url is not None:
            # the download's size is known only once it is in: the budget holds the cap meanwhile
            if admission is not None and (refusal := admission.take(max_bytes)) is not None:
                raise UploadError(refusal.status, refusal.slug, refusal.detail)
            data, name = await fetch_url(url)
            return Upload(*await offload(spool_bytes, data, folder), name, options)
        return Upload(spooled.path, spooled.size, spooled.sha256, form.filename or "", options)
    except BaseException:
        if spooled is not None:
            spooled.discard()
        raise
