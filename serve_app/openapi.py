"""The OpenAPI 3.1 document served at /api/openapi.json (hand-written: the API is small and
Starlette has no schema generator of its own)."""

from __future__ import annotations

from functools import lru_cache

PROBLEM = {"description": "RFC 9457 problem details",
           "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}
JOB = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}}
AUTH = [{"bearer": []}]


def _job_request(task: str, summary: str) -> dict:
    props = {
        "audio": {"type": "string", "format": "binary", "description": "WAV, FLAC, OGG/Vorbis, Opus, MP3, AAC/M4A, ALAC, WMA, or a video "
                                                                     "with sound (MP4, MOV, MKV/WebM, AVI)"},
        "format": {"type": "string", "enum": ["wav", "flac", "mp3", "opus"], "default": "wav",
                   "description": "wav 32-bit float, flac 24-bit, mp3 CBR 44.1 kHz, opus (Ogg, 48 kHz)"},
        "bitrate": {"type": "integer", "description": "kbps, mp3 (an MPEG-1 Layer III rate, 32-320; default 320) "
                                                      "and opus (12-512; default 160) only"},
        "normalize": {"type": "string", "enum": ["peak", "loudness"],
                      "description": "per-stem normalization after inference (true = peak)"},
        "debug": {"type": "boolean", "default": False,
                  "description": "include engine metadata (only where the deployment allows it)"},
        "wait": {"oneOf": [{"type": "boolean"}, {"type": "number", "minimum": 0}],
                 "description": "seconds to wait for the job (capped by max_wait_s, 50 by default); true: the cap, "
                                "false: 0. A job that has not ended by then is answered 202 with its id and "
                                "Location, and goes on; a disconnect never cancels it (DELETE does). Default: "
                                "the Prefer header's wait, else the cap"},
    }
    props["audio_url"] = {"type": "string", "format": "uri",
                          "description": "instead of 'audio': the service downloads it (https; at most max_upload_mb, "
                                         "url_fetch_timeout_s in all, url_max_redirects redirects; loopback, "
                                         "link-local, private and metadata addresses refused, checked on every "
                                         "address at connect time, unless url_allow_private). A refusal is a 4xx "
                                         "problem with code url_refused, url_status, url_timeout, url_redirects, "
                                         "url_unreachable or url_too_large (413), and costs nothing"}
    props["webhook"] = {"type": "string", "format": "uri", "maxLength": 2048,
                        "description": "called (POST, JSON, signed: Locoserve-Signature t=…,v1=HMAC-SHA256(secret, "
                                       "'t.body')) when the job ends; https to a public address (http and "
                                       "private addresses only where the service's config allows); retried with "
                                       "back-off for 24 h; a refused URL is a 422 and costs nothing"}
    if task == "separate":
        props["stems"] = {"type": "integer", "enum": [2, 5], "description": "default: the plan's default"}
    return {
        "summary": summary, "security": AUTH,
        "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                        "description": "a retry with the same key returns the first job and is not charged again"},
                       {"name": "Prefer", "in": "header", "required": False, "schema": {"type": "string"},
                        "description": "RFC 7240: 'wait=N' (seconds, capped) or 'respond-async' (0), when the "
                                       "form has no 'wait'; answered with Preference-Applied"}],
        "requestBody": {"required": True, "content": {"multipart/form-data": {
            "schema": {"type": "object", "properties": props,
                       "oneOf": [{"required": ["audio"]}, {"required": ["audio_url"]}]}},
            "application/x-www-form-urlencoded": {"schema": {"type": "object", "required": ["audio_url"],
                                                             "properties": props}}}},
        "responses": {
            "200": {"description": "done; RateLimit-Policy and RateLimit headers describe the quota", **JOB},
            "202": {"description": "accepted, and not ended within the wait; it goes on: poll Location", **JOB},
            **{str(code): PROBLEM | {"description": why} for code, why in [
                (400, "malformed request"), (401, "missing, unknown, expired or revoked key"),
                (402, "out of credits"), (403, "capability or option not in the plan"),
                (409, "a request with this Idempotency-Key is still in progress (Retry-After)"),
                (408, "the upload stalled or arrived too slowly"), (413, "upload too large"), (415, "not multipart, or not a supported audio format"),
                (422, "invalid options, unusable or too short audio, an Idempotency-Key over 255 characters"),
                (429, "quota exhausted, or too many uploads in progress for this account (Retry-After)"),
                (500, "the job failed on our side (refunded)"),
                (503, "queue full (/problems/queue-full), or a model deployment or the dispatcher unavailable "
                      "(Retry-After; nothing charged)")]},
        },
    }


@lru_cache(maxsize=1)
def openapi() -> dict:
    job_id = [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Locoserve", "version": "0.1.0",
                 "description": "Stem separation and audio clean-up. Errors are RFC 9457 problem+json."},
        "paths": {
            "/api/audio/separate": {"post": _job_request("separate", "Split music into 2 or 5 stems")},
            "/api/audio/clean": {"post": _job_request("clean", "Remove noise from a recording (speech, noise)")},
            "/api/audio/enhance": {"post": _job_request(
                "enhance", "Clean plus mastering: 80 Hz high-pass, -16 LUFS integrated, -1 dBTP ceiling")},
            "/api/jobs": {
                "get": {"summary": "The caller's jobs, newest first, a page at a time", "security": AUTH,
                        "parameters": [
                            {"name": "limit", "in": "query", "required": False,
                             "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20}},
                            {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                             "description": "next_cursor of the previous page"}],
                        "responses": {"200": {"description": "a page of jobs", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/JobPage"}}}},
                            "401": PROBLEM, "422": PROBLEM | {"description": "bad limit or cursor"}}}},
            "/api/jobs/{job_id}": {
                "get": {"summary": "Job status, queue position, progress, stems", "security": AUTH,
                        "parameters": job_id, "responses": {"200": JOB, "401": PROBLEM, "404": PROBLEM}},
                "delete": {"summary": "Cancel a queued or running job (refunded)", "security": AUTH,
                           "parameters": job_id, "responses": {"200": JOB, "202": JOB, "401": PROBLEM,
                                                               "404": PROBLEM, "409": PROBLEM,
                                                               "503": PROBLEM}}},
            "/api/jobs/{job_id}/stems/{filename}": {
                "get": {"summary": "Download a stem, e.g. vocals.wav: with the key, or with a signed link's token",
                        "security": AUTH + [{}],
                        "parameters": job_id + [{"name": "filename", "in": "path", "required": True,
                                                 "schema": {"type": "string"}},
                                                {"name": "token", "in": "query", "required": False,
                                                 "schema": {"type": "string"},
                                                 "description": "from the job's 'links': this stem only, until "
                                                                "links_expire_at; no key needed"}],
                        "responses": {"200": {"description": "the audio file, saved as '{song name}-{stem}.{ext}' "
                                                             "(Content-Disposition)",
                                              "content": {"audio/wav": {}, "audio/flac": {}, "audio/mpeg": {},
                                                          "audio/ogg": {}}}, "401": PROBLEM,
                                      "403": PROBLEM | {"description": "the token is not valid for this file, or "
                                                                       "has expired (/problems/invalid-link)"},
                                      "404": PROBLEM}}},
            "/api/jobs/{job_id}/stems.zip": {
                "get": {"summary": "All stems in one ZIP (stored, streamed), saved as '{song name}-stems.zip': "
                                   "with the key, or with the token of the job's archive_link",
                        "security": AUTH,
                        "parameters": job_id + [{"name": "token", "in": "query", "required": False,
                                                 "schema": {"type": "string"},
                                                 "description": "from the job's 'archive_link': this archive only, "
                                                                "until links_expire_at; no key needed"}],
                        "responses": {"200": {"description": "members named '{song name}-{stem}.{ext}'",
                                              "content": {"application/zip": {}}}, "401": PROBLEM,
                                      "403": PROBLEM | {"description": "the token is not valid for this archive, "
                                                                       "or has expired"}, "404": PROBLEM}}},
            "/api/jobs/{job_id}/previews/{filename}": {
                "get": {"summary": "A stem's small preview for playback (mp3, 96 kbps), e.g. vocals.mp3",
                        "security": AUTH,
                        "parameters": job_id + [{"name": "filename", "in": "path", "required": True,
                                                 "schema": {"type": "string"}}],
                        "responses": {"200": {"description": "the preview", "content": {"audio/mpeg": {}}},
                                      "401": PROBLEM, "404": PROBLEM}}},
            "/api/jobs/{job_id}/peaks": {
                "get": {"summary": "Waveform peaks of every stem", "security": AUTH, "parameters": job_id,
                        "responses": {"200": {"description": "peaks", "content": {"application/json": {
                            "schema": {"$ref": "#/components/schemas/Peaks"}}}}, "401": PROBLEM, "404": PROBLEM}}},
            "/api/me": {"get": {"summary": "Plan, capabilities, remaining quotas and credits, and the service's "
                                           "limits (max_upload_mb, max_input_seconds, results_ttl_s)",
                                "security": AUTH,
                                "responses": {"200": {"description": "entitlement state"}, "401": PROBLEM}}},
            "/api/webhooks/stripe": {"post": {"summary": "Stripe events (Stripe-Signature verified)",
                                              "responses": {"200": {"description": "processed or duplicate"},
                                                            "400": PROBLEM}}},
            "/": {"get": {"summary": "Locoserve Studio, the web page (HTML; its files under /static/)",
                          "responses": {"200": {"description": "the page", "content": {"text/html": {}}}}}},
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": {"description": "ok"}}}},
            "/readyz": {"get": {"summary": "Readiness: every model deployment can take jobs",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "a model deployment is not serving"}}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Problem": {"type": "object", "properties": {
                    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                    "detail": {"type": "string"}}},
                "Job": {"type": "object", "properties": {
                    "job_id": {"type": "string"},
                    "status": {"type": "string", "enum": ["queued", "running", "done", "failed", "cancelled"]},
                    "task": {"type": "string"}, "variant": {"type": "string"}, "plan": {"type": "string"},
                    "progress": {"type": "number"}, "queue_position": {"type": ["integer", "null"]},
                    "device": {"type": ["string", "null"]}, "fallback": {"type": "boolean"},
                    "fallback_reason": {"type": ["string", "null"]}, "duration_s": {"type": "number"},
                    "source_name": {"type": ["string", "null"], "description": "the upload's file name, sanitized"},
                    "format": {"type": "string"}, "bitrate_kbps": {"type": ["integer", "null"]},
                    "stems": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                              "description": "download URLs (send the key)"},
                    "links": {"type": "object", "additionalProperties": {"type": "string"},
                              "description": "signed download URLs (?token=…) that need no key: one stem each, "
                                             "until links_expire_at (link_ttl_s, 1 h by default)"},
                    "links_expire_at": {"type": "string", "format": "date-time"},
                    "webhook": {"type": "object", "description": "GET /api/jobs/{id} of a job with a webhook: its url "
                                "and deliveries [{event_id, type, status (pending|delivered|failed), attempts "
                                "[{at, status_code, error}], next_attempt_at, delivered_at}]"},
                    "archive": {"type": ["string", "null"], "description": "URL of all stems as one ZIP"},
                    "archive_link": {"type": "string", "description": "the archive's URL signed like 'links' "
                                                                      "(no key needed, until links_expire_at)"},
                    "previews": {"type": ["object", "null"], "additionalProperties": {"type": "string"},
                                 "description": "URL of each stem's preview (mp3, 96 kbps)"},
                    "peaks": {"type": ["string", "null"], "description": "URL of the stems' waveform peaks"},
                    "entitlement": {"type": "object"}, "error": {"type": ["string", "null"]},
                    "metadata": {"type": "object", "description": "engine metadata (debug only)"}}},
                "JobPage": {"type": "object", "properties": {
                    "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                    "next_cursor": {"type": ["string", "null"], "description": "null on the last page"},
                    "next": {"type": ["string", "null"], "description": "URL of the next page"}}},
                "Peaks": {"type": "object", "properties": {
                    "format": {"type": "string"}, "bitrate_kbps": {"type": "integer"},
                    "buckets": {"type": "integer", "description": "at most this many (min, max) pairs a stem"},
                    "stems": {"type": "object", "additionalProperties": {"type": "object", "properties": {
                        "frames": {"type": "integer"}, "sample_rate": {"type": "integer"},
                        "min": {"type": "array", "items": {"type": "number"}},
                        "max": {"type": "array", "items": {"type": "number"}}}}}}},
            },
        },
    }
