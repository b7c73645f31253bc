"""Reading a multipart upload under a size cap, and the job options that come with it.

The cap is enforced twice: a declared Content-Length above it is refused at once, and the
body stream is counted as it arrives, so a chunked upload is cut off the moment it passes
the cap. Either way the caller gets 413 before the whole body has been buffered.

The body must also keep coming: no bytes for `idle_s`, or an average below `min_rate` bytes/s
once `grace_s` have passed, ends the upload with 408 (a slow sender would otherwise hold an
ingress slot for the proxy's whole request timeout). The multipart parser spools the file to
disk past 1 MiB; it is read into memory only after the admission's memory budget granted it.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

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


@dataclass
class Upload:
    data: bytes
    filename: str
    options: JobOptions


async def read_upload(request: Request, max_bytes: int, pace: Pace | None = None,
                      admission: Admission | None = None,
                      fetch_url: Callable[[str], Awaitable[tuple[bytes, str]]] | None = None) -> Upload:
    """The audio comes as the file `audio`, or as `audio_url` fetched by `fetch_url`
    (serve_app/outbound.py), under the same size cap and memory budget."""
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

    try:
        form = await Request(request.scope, counted).form(max_files=1, max_fields=20)
    except MultiPartException as e:
        raise UploadError(400, "bad-request", f"malformed multipart body: {e.message}") from e
    try:
        audio, url = form.get("audio"), form.get("audio_url")
        if isinstance(audio, UploadFile) and url is not None:
            raise UploadError(422, "bad-request", "send the audio as a file ('audio') or a URL ('audio_url'), not both")
        if not isinstance(audio, UploadFile) and not (isinstance(url, str) and url and fetch_url):
            raise UploadError(422, "bad-request", "the multipart field 'audio' with a file (or 'audio_url') is missing")
        fields = {k: v for k, v in form.items() if k not in ("audio", "audio_url") and isinstance(v, str)}
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
            return Upload(data, name, options)
        if admission is not None and (refusal := admission.take(audio.size or 0)) is not None:
            raise UploadError(refusal.status, refusal.slug, refusal.detail)
        return Upload(await audio.read(), audio.filename or "", options)
    finally:
        await form.close()
