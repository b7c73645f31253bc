"""Reading a multipart upload under a size cap, and the job options that come with it.

The cap is enforced twice: a declared Content-Length above it is refused at once, and the
body stream is counted as it arrives, so a chunked upload is cut off the moment it passes
the cap. Either way the caller gets 413 before the whole body has been buffered.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException
from starlette.requests import Request

from models.formats import EncodingError, check_encoding


class UploadError(Exception):
    def __init__(self, status: int, slug: str, detail: str):
        super().__init__(detail)
        self.status, self.slug, self.detail = status, slug, detail


class JobOptions(BaseModel):
    """Form fields of POST /api/audio/{separate,clean,enhance}; unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")

    stems: int | None = None
    format: Literal["wav", "flac", "mp3", "opus"] = "wav"
    bitrate: int | None = None  # kbps, mp3 and opus only (default 320 and 160)
    normalize: Literal["peak", "loudness"] | None = None
    debug: bool = False
    wait: bool = True

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


@dataclass
class Upload:
    data: bytes
    filename: str
    options: JobOptions


async def read_upload(request: Request, max_bytes: int) -> Upload:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise UploadError(415, "unsupported-media-type",
                          "send multipart/form-data with the audio file in a field named 'audio'")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > max_bytes:
        raise UploadError(413, "payload-too-large", f"the upload is {int(declared)} bytes; the limit is {max_bytes}")
    received = 0
    receive = request.receive

    async def counted():
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > max_bytes:
                raise UploadError(413, "payload-too-large", f"the upload exceeds the limit of {max_bytes} bytes")
        return message

    try:
        form = await Request(request.scope, counted).form(max_files=1, max_fields=20)
    except MultiPartException as e:
        raise UploadError(400, "bad-request", f"malformed multipart body: {e.message}") from e
    try:
        audio = form.get("audio")
        if not isinstance(audio, UploadFile):
            raise UploadError(422, "bad-request", "the multipart field 'audio' with a file is missing")
        fields = {k: v for k, v in form.items() if k != "audio" and isinstance(v, str)}
        try:
            options = JobOptions(**fields)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors())
            raise UploadError(422, "bad-request", f"invalid options: {problems}") from None
        return Upload(await audio.read(), audio.filename or "", options)
    finally:
        await form.close()
