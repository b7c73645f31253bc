"""The HTTP API: a Starlette app inside the Ingress deployment (0 CPUs, async handlers only;
database calls and decoding run in threads, off the event loop).

A job request goes: key check (401/403 before reading the upload) → multipart under a size
cap (413), spooled to a file in the data folder (serve_app/uploads.py) → the audio decoded
from that file block by block and validated (4xx, nothing charged) → authorize_and_consume
(usage recorded before any inference; 402/403/429) → the spool file renamed into the job
inputs → job record (queued) → the dispatcher, by id. From the record and the stored input
any dispatcher can queue the job again, and any model replica can run it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote

from ray import serve
from ray.serve.exceptions import RayServeException
from ray.serve.handle import DeploymentHandle
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from entitlements import EntitlementError, Unauthorized, authorize_and_consume, open_database, peek, settle, state
from entitlements.accounts import seed_demo_users
from entitlements.schema import iso
from entitlements.stripe_webhooks import handle as handle_webhook
from models import audio
from models.naming import download_name, track_name
from models.formats import MEDIA_TYPES

from . import studio
from .jobs import ACTIVE, Job, JobStore, describe, spec_of
from .links import LinkSigner, load_secret
from .outbound import FetchError, Refused, check_resolved, fetch
from . import webhooks
from .admission import Admission, MemoryBudget, Refusal, UploadGate
from .metrics import IngressMetrics
from .outcome import follow_record
from .openapi import openapi
from .problems import DESCRIPTIONS, from_audio, from_entitlement, problem
from .readiness import Readiness
from .results import PEAKS_FILE, preview_path, zip_stream
from .settings import Settings
from .uploads import Pace, Upload, UploadError, read_upload
from .waiting import wait_seconds

log = logging.getLogger("ray.serve")

TASKS = {"separate": "stem_split", "clean": "audio_clean", "enhance": "audio_enhance"}
MAX_IDEMPOTENCY_KEY = 255  # characters, as Stripe allows; stored with the usage event
POSITION_WAIT_S = 0.5  # a status poll answers from the record after this, position unknown
CANCEL_WAIT_S = 5.0
# how long a submission keeps offering a job to the dispatcher while its replica is replaced
# (Serve starts a new one within seconds); past it the job is refunded and the caller told 503
ENQUEUE_RETRY_S = 15.0
SUBMIT_THREADS = 8
# response headers a cross-origin page may read: the job's URL, the wait applied, quotas, retries
CORS_EXPOSED = ["Location", "Preference-Applied", "RateLimit", "RateLimit-Policy", "Retry-After",
                "Content-Disposition", "Idempotent-Replayed"]
JOBS_PAGE = 20  # GET /api/jobs: the default page size
ARCHIVE = "stems.zip"  # the file name a ZIP link's token is bound to
JOBS_PAGE_MAX = 100


def bearer(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth[:7].lower() == "bearer " else None


def root(request: Request) -> str:
    """The application's route prefix ('' at /), for URLs the client should follow."""
    return request.scope.get("root_path", "").rstrip("/")


def content_disposition(filename: str) -> str:
    """Both forms of RFC 6266: an ASCII `filename=` for clients that read only that (curl -OJ),
    and RFC 5987's UTF-8 `filename*=`, which browsers prefer. The name is already sanitized."""
    ascii_name = filename.encode("ascii", "replace").decode().replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(filename)}"


def fingerprint(task: str, variant: str, options, audio_sha256: bytes) -> str:
    """What an Idempotency-Key is bound to: the options that shape the job, and the audio's
    SHA-256 digest (computed while the upload is spooled)."""
    h = hashlib.sha256(f"{task}|{variant}|{options.format}|{options.bitrate}|{options.normalize}|".encode())
    h.update(audio_sha256)
    return h.hexdigest()


def decoded_seconds(path: Path, max_seconds: float) -> float:
    """The audio's length at 44.1 kHz, decoded (and so validated: corrupt, truncated, NaN…)
    block by block from the file: the samples themselves are never held, as the model
    replica decodes the input again."""
    return sum(block.shape[1] for block in audio.iter_decode(path, max_seconds)) / 44100


# max_ongoing_requests: well above max_uploads, so that uploads (bounded by the admission
# gate) and jobs waiting for a model never leave /healthz or a status poll queued at the proxy
@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=1000, graceful_shutdown_timeout_s=5)
@serve.ingress()
class Ingress:
    def __init__(self, dispatcher: DeploymentHandle, settings: dict):
        self.s = Settings(**settings)
        self.db = open_database(self.s.database_url)
        if self.s.seed_demo_users:
            try:
                if seed_demo_users(self.db, Path(self.s.data_dir)):
                    log.info("demo users created; keys in %s", Path(self.s.data_dir) / "demo-keys.json")
            except IntegrityError:  # another ingress replica seeded at the same moment
                pass
        self.jobs = JobStore(self.db, self.s.results_dir)
        # from the environment, not the settings: the application's config is visible in Serve
        self.links = LinkSigner(load_secret(self.s.data_dir, os.environ.get("LOCOSERVE_LINK_SECRET")),
                                self.s.link_ttl_s)
        self.dispatcher = dispatcher
        self.metrics = IngressMetrics()
        try:
            app_name = serve.get_replica_context().app_name
        except RayServeException:  # Serve's local testing mode (tests) has no replica context
            app_name = None
        self.readiness = Readiness(app_name)
        # Submissions' blocking work (key checks, decoding, charging) runs in a pool of its own:
        # in the default one, a burst of uploads queued every status poll and /api/me behind it
        self._submit_pool = ThreadPoolExecutor(SUBMIT_THREADS, thread_name_prefix="submit")
        self.gate = UploadGate(self.s.max_uploads_per_key, self.s.max_uploads)
        self.budget = MemoryBudget(int(self.s.upload_memory_mb * 2**20))
        self.pace = Pace(self.s.upload_idle_timeout_s, self.s.upload_min_bytes_per_s, self.s.upload_rate_grace_s)

    def __serve_build_asgi_app__(self) -> Starlette:
        routes = [Route(f"/api/audio/{task}", self._job_endpoint(task), methods=["POST"]) for task in TASKS]
        routes += [
            Route("/api/jobs", self.list_jobs, methods=["GET"]),
            Route("/api/jobs/{job_id}", self.job, methods=["GET", "DELETE"]),
            Route("/api/jobs/{job_id}/stems/{filename}", self.download, methods=["GET"]),
            Route("/api/jobs/{job_id}/stems.zip", self.archive, methods=["GET"]),
            Route("/api/jobs/{job_id}/previews/{filename}", self.preview, methods=["GET"]),
            Route("/api/jobs/{job_id}/peaks", self.peaks, methods=["GET"]),
            Route("/api/me", self.me, methods=["GET"]),
            Route("/api/webhooks/stripe", self.stripe, methods=["POST"]),
            Route("/api/openapi.json", lambda r: JSONResponse(openapi()), methods=["GET"]),
            Route("/problems/{slug}", self.problem_type, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
            *studio.routes(),
        ]
        # CORS only for the origins the config names: a page elsewhere can then call the API (with
        # a key it holds) and play signed stem links; without any, browsers keep their default
        middleware = [Middleware(CORSMiddleware, allow_origins=self.s.cors_origins,
                                 allow_methods=["GET", "POST", "DELETE"],
                                 allow_headers=["Authorization", "Content-Type", "Idempotency-Key", "Prefer"],
                                 expose_headers=CORS_EXPOSED, max_age=600)] if self.s.cors_origins else []
        return Starlette(routes=routes, middleware=middleware,
                         exception_handlers={HTTPException: self._http_error, Exception: self._internal_error})

    # -- errors -------------------------------------------------------------------------------
    async def _http_error(self, request: Request, exc: HTTPException) -> Response:
        slug = {404: "not-found", 405: "method-not-allowed"}.get(exc.status_code, "bad-request")
        # Starlette puts Allow on its 405 (RFC 9110 requires it); keep the exception's headers
        return problem(exc.status_code, slug, exc.detail or "Error", f"{request.method} {request.url.path}: {exc.detail}",
                       dict(exc.headers or {}))

    async def _internal_error(self, request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem(500, "internal", "Internal error", "an unexpected error on our side; it has been logged")

    def _deny(self, e: EntitlementError) -> Response:
        self.metrics.denials.inc(tags={"reason": e.slug})
        return from_entitlement(e)

    # -- jobs ---------------------------------------------------------------------------------
    def _job_endpoint(self, task: str):
        async def endpoint(request: Request) -> Response:
            return await self.submit(request, task)
        return endpoint

    async def submit(self, request: Request, task: str) -> Response:
        key, capability = bearer(request), TASKS[task]
        idempotency_key = request.headers.get("idempotency-key")
        if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
            return problem(422, "bad-request", "Unusable request",
                           f"Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY} characters; nothing was charged")
        # the gate counts the key as sent, before any database work: a flood of uploads on one
        # key is refused without costing a thread or a query (an unknown key holds its place
        # only until the check below answers 401)
        who = key or ""
        refusal = self.gate.enter(who)
        if refusal is not None:
            return self._refuse(refusal)
        admission = Admission(self.gate, who, self.budget)
        try:
            try:
                caller = await self._submitting(peek, self.db, key, capability)
            except EntitlementError as e:
                return self._deny(e)
            return await self._submit(request, task, key, capability, idempotency_key, caller, admission)
        finally:
            admission.release()

    async def _fetch(self, url: str) -> tuple[bytes, str]:
        """`audio_url`'s file (serve_app/outbound.py); its refusals are the caller's 4xx, uncharged."""
        try:
            return await self._submitting(fetch, url, int(self.s.max_upload_mb * 1024 * 1024),
                                          self.s.url_fetch_timeout_s, self.s.url_max_redirects,
                                          self.s.url_allow_private)
        except FetchError as e:
            slug = "payload-too-large" if e.status == 413 else "bad-request"
            raise UploadError(e.status, slug, f"audio_url: {e.detail}", e.code) from None

    async def _submitting(self, fn, /, *args, **kwargs):
        return await asyncio.get_running_loop().run_in_executor(self._submit_pool,
                                                                 functools.partial(fn, *args, **kwargs))

    def _refuse(self, refusal: Refusal) -> Response:
        self.metrics.denials.inc(tags={"reason": refusal.slug})
        return problem(refusal.status, refusal.slug, "Too many uploads" if refusal.status == 429 else "Busy",
                       f"{refusal.detail}; nothing was charged", {"Retry-After": str(self.s.retry_after_s)})

    async def _submit(self, request: Request, task: str, key: str | None, capability: str,
                      idempotency_key: str | None, caller, admission: Admission) -> Response:
        try:
            upload = await read_upload(request, int(self.s.max_upload_mb * 1024 * 1024), self.pace, admission,
                                       self._fetch, spool_dir=self.jobs.inputs_dir, offload=self._submitting)
        except UploadError as e:
            headers = {"Retry-After": str(self.s.retry_after_s)} if e.status in (429, 503) else None
            title = {408: "Upload too slow", 503: "Busy"}.get(e.status, "Unusable request")
            return problem(e.status, e.slug, title, f"{e.detail}; nothing was charged", headers, code=e.code)
        try:
            return await self._from_upload(request, task, key, capability, idempotency_key, caller, admission,
                                           upload)
        finally:  # refused, failed or cancelled (the client left): its spool file goes too
            upload.discard()

    async def _from_upload(self, request: Request, task: str, key: str | None, capability: str,
                           idempotency_key: str | None, caller, admission: Admission, upload: Upload) -> Response:
        opts = upload.options
        if task == "separate":
            variant = f"{opts.stems}stem" if opts.stems else (caller.default_variant or "2stem")
        elif opts.stems is not None:
            return problem(422, "bad-request", "Unusable request", f"'stems' does not apply to {task}")
        else:
            variant = "speech"
        model = "five_stem" if variant == "5stem" else "two_stem"
        if opts.webhook is not None:
            try:  # refused here, before anything is charged; the addresses are checked again to connect
                await self._submitting(check_resolved, opts.webhook, self.s.webhook_allow_private)
            except Refused as e:
                return problem(422, "bad-request", "Unusable request", f"webhook: {e}; nothing was charged",
                               code="webhook_refused")
        refused = await self._model_unavailable(model)
        if refused is not None:
            return refused
        try:
            info = await self._submitting(audio.probe, upload.path, self.s.max_input_seconds)
            # refuse from the header, before decoding; the consume below checks again, atomically
            caller.check(info.duration, variant if task == "separate" else None)
            duration = await self._submitting(decoded_seconds, upload.path, self.s.max_input_seconds)
        except audio.AudioError as e:
            return from_audio(e)
        except EntitlementError as e:
            return self._deny(e)
        if duration < self.s.min_input_seconds:  # a few frames are no song: refused, not charged
            return problem(422, "invalid-audio", "Unusable audio", f"the audio lasts {duration:.3f} s; at least "
                           f"{self.s.min_input_seconds:g} s is needed", code="too_short")
        try:
            decision = await self._submitting(
                authorize_and_consume, self.db, capability, api_key=key,
                idempotency_key=idempotency_key,
                fingerprint=fingerprint(task, variant, opts, upload.sha256), input_seconds=duration,
                variant=variant if task == "separate" else None, ttl_s=self.s.reservation_ttl_s)
        except EntitlementError as e:
            return self._deny(e)
        headers = decision.headers()
        if decision.replayed:
            job = await self._submitting(self.jobs.by_event, decision.event_id)
            if job is not None:
                return self._job_response(request, job, opts.debug, headers | {"Idempotent-Replayed": "true"})
            # the first request has been charged but has not written its job yet (it is still in
            # flight): making a second job on the same usage event would run it twice for one charge
            return problem(409, "idempotency-in-progress", "Request in progress",
                           "a request with this Idempotency-Key is still being processed; retry shortly",
                           {"Retry-After": "1"})
        job = Job(id=uuid.uuid4().hex, user_id=decision.user_id, task=task, variant=variant,
                  model=model, plan=decision.plan,
                  priority=decision.priority, input_seconds=duration, format=opts.format,
                  bitrate=opts.bitrate, source_name=track_name(upload.filename, fallback="") or None,
                  normalize=opts.normalize, usage_event_id=decision.event_id, random_weights=self.s.random_weights,
                  webhook=opts.webhook,
                  entitlement={k: v for k, v in decision.to_dict().items()
                               if k in ("capability", "source", "limit", "used", "remaining", "reset_at",
                                        "credits_remaining")})
        try:  # the input first: a queued record is runnable by whichever dispatcher reads it
            await self._submitting(self.jobs.adopt_input, job.id, upload.path)
        except OSError as e:
            log.exception("job %s: could not store the upload", job.id)
            await self._submitting(settle, self.db, decision.event_id, ok=False,
                                    reason=f"input not stored: {type(e).__name__}")
            return problem(503, "unavailable", "Storage unavailable", "the upload could not be stored; nothing "
                           "was charged", {"Retry-After": str(self.s.retry_after_s)})
        try:
            await self._submitting(self.jobs.create, job)
        except Exception:
            await self._submitting(self.jobs.drop_input, job.id)
            await self._submitting(settle, self.db, decision.event_id, ok=False, reason="job record not written")
            raise
        admission.release()  # an audio_url download has left this process's memory
        queued = await self._enqueue(job)
        if queued is None:
            # nothing ran it: refunded unless something did start it meanwhile
            if await self._submitting(self.jobs.finish, job.id, "failed", error="the dispatcher was unavailable",
                                      refund_reason="dispatcher unavailable", only_from=("queued",)):
                return problem(503, "unavailable", "Dispatcher unavailable", "the job could not be queued; it "
                               "was refunded", {"Retry-After": str(self.s.retry_after_s)}, job_id=job.id,
                               refunded=True)
        elif not queued["queued"]:  # back-pressure, said as such whatever the wait mode
            return problem(503, queued["reason"], "Queue full", f"{queued['detail']}; the job was refunded",
                           {"Retry-After": str(queued["retry_after"])}, job_id=job.id, refunded=True)
        wait_s, preferred = wait_seconds(opts.wait, request.headers.get("prefer"), self.s.max_wait_s)
        if preferred:
            headers["Preference-Applied"] = f"wait={wait_s:g}"
        if wait_s > 0:
            try:  # running out of time (or the client leaving) only ends the wait, never the job
                job = await asyncio.wait_for(self._follow(job.id), wait_s)
            except TimeoutError:
                pass
        return self._job_response(request, await self._submitting(self.jobs.get, job.id), opts.debug, headers)

    async def _enqueue(self, job: Job) -> dict | None:
        """The dispatcher's answer; None if no dispatcher took the job within ENQUEUE_RETRY_S."""
        deadline = asyncio.get_running_loop().time() + ENQUEUE_RETRY_S
        delay = 0.25
        while True:
            try:
                return await self.dispatcher.enqueue.remote(spec_of(job))
            except Exception as e:  # noqa: BLE001 (a dead or replaced replica: Serve routes to the next)
                if asyncio.get_running_loop().time() + delay > deadline:
                    log.error("job %s: no dispatcher took it within %g s (%s)", job.id, ENQUEUE_RETRY_S,
                              type(e).__name__)
                    return None
                log.warning("job %s: the dispatcher did not take it (%s); offering it again", job.id,
                            type(e).__name__)
                await asyncio.sleep(delay)
                delay = min(2 * delay, 2.0)

    async def _follow(self, job_id: str) -> Job:
        """Wait until the job has ended and return its record, which decides (see `outcome`)."""
        try:
            await self.dispatcher.wait.remote(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the dispatcher went away: the job record still tells the truth
            log.warning("job %s: the dispatcher stopped answering (%s); following the job's record",
                        job_id, type(e).__name__)
        return await follow_record(self.jobs, job_id)

    def _describe(self, request: Request, job: Job) -> dict:
        """The job as the API shows it, with signed links to its stems (serve_app/links.py)."""
        body = describe(job, root(request))
        if body["stems"]:
            expires = self.links.expires()
            body["links"] = {name: f"{url}?token={self.links.token(job.id, url.rsplit('/', 1)[1], expires)}"
                             for name, url in body["stems"].items()}
            body["links_expire_at"] = iso(datetime.fromtimestamp(expires, timezone.utc))
            # the ZIP too: a browser saves it straight to disk from a link, instead of holding
            # hundreds of MB of stems in memory to save them from a blob
            body["archive_link"] = f"{body['archive']}?token={self.links.token(job.id, ARCHIVE, expires)}"
        return body

    def _job_response(self, request: Request, job: Job, debug: bool, headers: dict | None = None,
                      status: int | None = None) -> Response:
        body = self._describe(request, job)
        if debug and self.s.allow_debug:
            body["metadata"] = job.engine_metadata
        headers = dict(headers or {})
        if status == 202 or job.status in ACTIVE:
            headers["Location"] = f"{root(request)}/api/jobs/{job.id}"
            return JSONResponse(body, status_code=202, headers=headers)
        if job.status == "failed":
            return problem(500, "job-failed", "Job failed", job.error or "the job failed", headers,
                           job=body, refunded=True)
        return JSONResponse(body, status_code=200, headers=headers)

    async def _owned_job(self, request: Request) -> tuple[int, Job]:
        caller = await asyncio.to_thread(peek, self.db, bearer(request))
        job = await asyncio.to_thread(self.jobs.get, request.path_params["job_id"], caller.user_id)
        if job is None:  # missing and not-yours look the same
            raise HTTPException(404, "no such job")
        return caller.user_id, job

    async def get_job(self, request: Request) -> Response:
        try:
            _, job = await self._owned_job(request)
        except Unauthorized as e:
            return self._deny(e)
        body = self._describe(request, job)  # the record answers; the dispatcher only adds a position
        if job.webhook:
            body["webhook"] = {"url": job.webhook,
                               "deliveries": await asyncio.to_thread(webhooks.view, self.db, job.id)}
        if job.status == "queued":
            body["queue_position"] = await self._position(job.id)
        if request.query_params.get("debug") in ("1", "true") and self.s.allow_debug:
            body["metadata"] = job.engine_metadata
        return JSONResponse(body)

    async def _position(self, job_id: str) -> int | None:
        """The queue position if the dispatcher says it at once; None while it cannot (restarting)."""
        try:
            return await asyncio.wait_for(self._await(self.dispatcher.position.remote(job_id)), POSITION_WAIT_S)
        except Exception as e:  # noqa: BLE001 (a timeout or a dead replica: a poll must not hang on it)
            log.warning("job %s: no queue position from the dispatcher (%s)", job_id, type(e).__name__)
            return None

    @staticmethod
    async def _await(response):
        return await response

    async def job(self, request: Request) -> Response:
        # one route for both methods, so that a 405 on it lists them all in Allow
        return await (self.get_job(request) if request.method in ("GET", "HEAD") else self.cancel_job(request))

    async def cancel_job(self, request: Request) -> Response:
        try:
            _, job = await self._owned_job(request)
        except Unauthorized as e:
            return self._deny(e)
        if job.status not in ACTIVE:
            return problem(409, "conflict", "Job already ended", f"the job is {job.status}",
                           job=self._describe(request, job))
        try:
            outcome = await asyncio.wait_for(self._await(self.dispatcher.cancel.remote(job.id)), CANCEL_WAIT_S)
        except Exception as e:  # noqa: BLE001
            log.warning("job %s: the dispatcher did not take the cancel (%s)", job.id, type(e).__name__)
            return problem(503, "unavailable", "Dispatcher unavailable", "the job could not be cancelled now; "
                           "retry", {"Retry-After": str(self.s.retry_after_s)}, job=self._describe(request, job))
        if outcome == "cancelling":  # running: the replica stops at its next chunk
            for _ in range(100):
                job = await asyncio.to_thread(self.jobs.get, job.id)
                if job.status not in ACTIVE:
                    break
                await asyncio.sleep(0.1)
        job = await asyncio.to_thread(self.jobs.get, job.id)
        return JSONResponse(self._describe(request, job), status_code=200 if job.status not in ACTIVE else 202)

    async def download(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:  # a signed link: the token stands in for the key, for this file only
            job_id, filename = request.path_params["job_id"], request.path_params["filename"]
            why = self.links.check(job_id, filename, token)
            if why is not None:
                return problem(403, "invalid-link", "Invalid link", why)
            job = await asyncio.to_thread(self.jobs.get, job_id)
            if job is None:
                raise HTTPException(404, "no such job")
        else:
            try:
                _, job = await self._owned_job(request)
            except Unauthorized as e:
                return self._deny(e)
        name, _, ext = request.path_params["filename"].rpartition(".")
        path = self.jobs.result_dir(job.id) / f"{name}.{ext}"
        if job.status != "done" or name not in (job.stems or []) or ext != job.format or not path.is_file():
            raise HTTPException(404, "no such stem (or its retention period has passed)")
        return FileResponse(path, media_type=MEDIA_TYPES[ext], headers={
            "Content-Disposition": content_disposition(download_name(job.source_name or job.id, name, ext))})

    async def list_jobs(self, request: Request) -> Response:
        try:
            caller = await asyncio.to_thread(peek, self.db, bearer(request))
        except Unauthorized as e:
            return self._deny(e)
        raw_limit, cursor = request.query_params.get("limit", str(JOBS_PAGE)), request.query_params.get("cursor")
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= JOBS_PAGE_MAX:
            return problem(422, "bad-request", "Unusable request", f"limit must be 1-{JOBS_PAGE_MAX}")
        try:
            jobs, next_cursor = await asyncio.to_thread(self.jobs.recent, caller.user_id, int(raw_limit), cursor)
        except ValueError as e:
            return problem(422, "bad-request", "Unusable request", f"cursor: {e}")
        base = root(request)
        return JSONResponse({
            "jobs": [self._describe(request, job) for job in jobs], "next_cursor": next_cursor,
            "next": f"{base}/api/jobs?limit={raw_limit}&cursor={next_cursor}" if next_cursor else None})

    async def _finished_job(self, request: Request) -> Job:
        """The caller's job with its results still on disk, else 404 (Unauthorized passes)."""
        _, job = await self._owned_job(request)
        if job.status != "done" or not job.stems or job.results_deleted_at is not None:
            raise HTTPException(404, "no results for this job (not done, or its retention period has passed)")
        return job

    async def archive(self, request: Request) -> Response:
        token = request.query_params.get("token")
        if token is not None:  # a signed link, as for a stem (see download)
            why = self.links.check(request.path_params["job_id"], ARCHIVE, token)
            if why is not None:
                return problem(403, "invalid-link", "Invalid link", why)
            job = await asyncio.to_thread(self.jobs.get, request.path_params["job_id"])
            if job is None or job.status != "done" or not job.stems or job.results_deleted_at is not None:
                raise HTTPException(404, "no results for this job (its retention period has passed)")
        else:
            try:
                job = await self._finished_job(request)
            except Unauthorized as e:
                return self._deny(e)
        folder, track = self.jobs.result_dir(job.id), job.source_name or job.id
        members = [(download_name(track, name, job.format), folder / f"{name}.{job.format}") for name in job.stems]
        if not all(path.is_file() for _, path in members):
            raise HTTPException(404, "no results for this job (its retention period has passed)")
        return StreamingResponse(zip_stream(members), media_type="application/zip", headers={
            "Content-Disposition": content_disposition(download_name(track, "stems", "zip"))})

    async def preview(self, request: Request) -> Response:
        try:
            job = await self._finished_job(request)
        except Unauthorized as e:
            return self._deny(e)
        name, _, ext = request.path_params["filename"].rpartition(".")
        made = (job.engine_metadata or {}).get("preview")
        path = preview_path(self.jobs.result_dir(job.id), name)
        if not made or name not in job.stems or ext != made["format"] or not path.is_file():
            raise HTTPException(404, "no such preview")
        # inline (no attachment): it is for a player; its content never changes
        return FileResponse(path, media_type=MEDIA_TYPES[ext], headers={"Cache-Control": "private, max-age=86400"})

    async def peaks(self, request: Request) -> Response:
        try:
            job = await self._finished_job(request)
        except Unauthorized as e:
            return self._deny(e)
        path = self.jobs.result_dir(job.id) / PEAKS_FILE
        if not (job.engine_metadata or {}).get("preview") or not path.is_file():
            raise HTTPException(404, "no peaks for this job (made before previews existed)")
        return FileResponse(path, media_type="application/json", headers={"Cache-Control": "private, max-age=86400"})

    # -- account, billing, health -------------------------------------------------------------
    async def me(self, request: Request) -> Response:
        try:
            caller = await asyncio.to_thread(peek, self.db, bearer(request))
        except Unauthorized as e:
            return self._deny(e)
        body = await asyncio.to_thread(state, self.db, caller.user_id)
        # the service's own ceilings, which apply on top of the plan's (a page shows them before upload)
        body["limits"] = {"max_upload_mb": self.s.max_upload_mb, "max_input_seconds": self.s.max_input_seconds,
                          "min_input_seconds": self.s.min_input_seconds, "results_ttl_s": self.s.results_ttl_s}
        return JSONResponse(body)

    async def stripe(self, request: Request) -> Response:
        if not self.s.stripe_webhook_secrets:
            return problem(503, "unavailable", "Webhooks not configured", "set STRIPE_WEBHOOK_SECRETS")
        body = await request.body()
        try:
            outcome = await asyncio.to_thread(handle_webhook, self.db, body, request.headers.get("stripe-signature"),
                                              self.s.stripe_webhook_secrets)
        except EntitlementError as e:
            return from_entitlement(e)
        return JSONResponse({"received": True, "outcome": outcome})

    async def problem_type(self, request: Request) -> Response:
        slug = request.path_params["slug"]
        if slug not in DESCRIPTIONS:
            raise HTTPException(404, "no such problem type")
        return JSONResponse({"type": f"/problems/{slug}", "description": DESCRIPTIONS[slug]})

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request) -> Response:
        """200 once every model deployment can take jobs; 503 naming the ones that cannot."""
        states = await asyncio.to_thread(self.readiness.states)
        ready = all(s.ready for s in states.values())
        body = {"status": "ready" if ready else "not_ready",
                "models": {m: {"deployment": s.deployment, "status": s.status} for m, s in states.items()}}
        return JSONResponse(body, status_code=200 if ready else 503)

    async def _model_unavailable(self, model: str) -> Response | None:
        """A 503 (nothing charged) when the model's deployment cannot run jobs at all."""
        try:
            state_ = (await asyncio.to_thread(self.readiness.states))[model]
        except Exception:  # the controller did not answer: let the job queue, as before
            log.exception("could not read the deployments' status")
            return None
        if state_.serving:
            return None
        log.error("refusing %s jobs: %s is %s: %s", model, state_.deployment, state_.status, state_.message[:500])
        return problem(503, "unavailable", "Model unavailable",
                       f"the {state_.deployment} model deployment is {state_.status}; nothing was charged",
                       {"Retry-After": str(self.s.retry_after_s)})
