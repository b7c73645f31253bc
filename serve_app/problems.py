"""RFC 9457 problem details: every error response of the API is `application/problem+json`.

`type` is a relative URI, `/problems/<slug>`, which the service answers with the problem's
description, so a client (or a person) can follow it.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

from entitlements import EntitlementError
from models.audio import AudioError

MEDIA_TYPE = "application/problem+json"

DESCRIPTIONS = {
    "bad-request": "The request is malformed: a missing field or a value out of range.",
    "unauthorized": "Send a valid API key as 'Authorization: Bearer <key>'.",
    "capability-not-in-plan": "Your plan does not include this kind of job; upgrade to use it.",
    "plan-limit": "The input or an option exceeds a limit of your plan (duration, stem variant).",
    "out-of-credits": "This job is paid with credits and your balance is too low; buy a credit pack.",
    "quota-exceeded": "Your plan's quota for this period is used up; see Retry-After and RateLimit.",
    "idempotency-key-reused": "This Idempotency-Key was already used with a different request.",
    "payload-too-large": "The upload exceeds the size limit.",
    "unsupported-media-type": "Upload multipart/form-data with an 'audio' file: WAV, FLAC, OGG, Opus, MP3, "
                              "AAC/M4A, ALAC, WMA, or a video with sound (MP4, MOV, MKV/WebM, AVI).",
    "invalid-audio": "The audio could not be used: empty, truncated, corrupt, out of range, or a video "
                     "without a sound track.",
    "not-found": "No such resource, or it is not yours.",
    "conflict": "The resource is not in a state that allows this.",
    "idempotency-in-progress": "A request with this Idempotency-Key is still being processed; retry after the "
                               "indicated time to get its job.",
    "request-timeout": "The upload stalled, or arrived more slowly than the service accepts; nothing was charged.",
    "too-many-uploads": "Your account has as many uploads in progress as it may; retry when one has finished.",
    "busy": "The service is receiving as many uploads as it can hold right now; retry after the indicated time.",
    "method-not-allowed": "The resource does not support this method; the Allow header lists those it does.",
    "queue-full": "The service is at capacity for your priority level; retry after the indicated time.",
    "job-failed": "The job failed for a reason of ours; it has been refunded.",
    "unavailable": "A part of the service is not available right now.",
    "invalid-webhook": "The webhook's signature could not be verified.",
    "invalid-link": "The signed stem link is not valid for this file, or it has expired; fetch the job again for "
                    "fresh links.",
    "internal": "An unexpected error on our side; it has been logged.",
}


def problem(status: int, slug: str, title: str, detail: str, headers: dict | None = None, **extra) -> JSONResponse:
    body = {"type": f"/problems/{slug}", "title": title, "status": status, "detail": detail}
    body.update({k: v for k, v in extra.items() if v is not None})
    return JSONResponse(body, status_code=status, headers=headers, media_type=MEDIA_TYPE)


def from_entitlement(e: EntitlementError) -> JSONResponse:
    return problem(e.status, e.slug, e.title, e.detail, e.headers, **e.extra)


AUDIO_STATUS = {"unsupported": 415, "empty": 422, "too_long": 422}


def from_audio(e: AudioError) -> JSONResponse:
    status = AUDIO_STATUS.get(e.code, 422)
    slug = "unsupported-media-type" if status == 415 else "invalid-audio"
    return problem(status, slug, "Unusable audio", str(e), code=e.code)
