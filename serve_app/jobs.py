"""Durable job records, in the same database as the entitlements.

A job's state survives the restart of any replica: the ingress stores its input and creates
it (queued), the model replica marks it running (naming itself) and reports progress, and
whoever ends it (the replica, or the dispatcher for jobs that never reached one) moves it to
done, failed or cancelled by a compare-and-set on its current state and, in the same
transaction, settles its usage event: committed when done, released (refunded) otherwise.

The input (the upload as received) lies in `inputs/` beside `results/` under the data
folder, which every node shares, until the job ends: the queue is rebuilt from the `queued`
records and a run on a lost replica restarts from it (serve_app/recovery.py).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from sqlalchemy import JSON, Column, and_, or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from entitlements import settle_in
from entitlements.schema import iso, utcnow

from .webhooks import new_event

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")
INPUT_GRACE_S = 3600  # an input file without an active job is deleted after this (a crash mid-submit)


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    task: str  # separate | clean | enhance
    variant: str
    model: str  # two_stem | five_stem
    plan: str
    priority: str
    status: str = Field(default="queued", index=True)
    progress: float = 0.0
    input_seconds: float
    format: str = "wav"
    bitrate: Optional[int] = None  # kbps, lossy formats only
    source_name: Optional[str] = None  # the upload's file name without extension, sanitized
    normalize: Optional[str] = None
    usage_event_id: str = Field(index=True)
    entitlement: Optional[dict] = Field(default=None, sa_column=Column(JSON))
    device: Optional[str] = None
    fallback: bool = False
    fallback_reason: Optional[str] = None
    random_weights: bool = False
    stems: Optional[list] = Field(default=None, sa_column=Column(JSON))
    engine_metadata: Optional[dict] = Field(default=None, sa_column=Column(JSON))
    error: Optional[str] = None
    # the Ray actor name of the model replica running it: a new dispatcher asks Ray whether it
    # still exists; None where unknown (Serve's local testing mode, records from older versions)
    replica: Optional[str] = None
    attempts: Optional[int] = None  # runs started on a replica that was then lost (None: none)
    webhook: Optional[str] = None  # called when the job ends (serve_app/webhooks.py)
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    results_deleted_at: Optional[datetime] = None


class JobStore:
    def __init__(self, engine: Engine, results_dir: str | Path):
        self.engine = engine
        self.results_dir = Path(results_dir)
        # owner-only: every user's stems lie here, reachable only through the API's ownership
        # check; an existing folder from an older version is tightened too
        self.results_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            self.results_dir.chmod(0o700)
        except PermissionError:  # shared storage created by another account: say so, still serve
            log.warning("cannot make %s owner-only (0700): it belongs to another user", self.results_dir)
        self.inputs_dir = self.results_dir.parent / "inputs"
        self.inputs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    def result_dir(self, job_id: str) -> Path:
        return self.results_dir / job_id

    def input_path(self, job_id: str) -> Path:
        return self.inputs_dir / job_id

    def save_input(self, job_id: str, data: bytes) -> Path:
        """Write the upload durably (fsync, then an atomic rename): a job is queued only after
        this, so whichever dispatcher or replica comes next can still run it."""
        path = self.input_path(job_id)
        tmp = path.with_name(f".{job_id}.part")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return path

    def adopt_input(self, job_id: str, spooled: Path) -> Path:
        """A spool file (serve_app/uploads.py, already fsynced, in this folder) made the job's
        input by an atomic rename: no copy of an upload of hundreds of MB."""
        path = self.input_path(job_id)
        os.replace(spooled, path)
        return path

    def drop_input(self, job_id: str) -> None:
        self.input_path(job_id).unlink(missing_ok=True)

    def expire_inputs(self, grace_s: float = INPUT_GRACE_S) -> int:
        """Delete inputs whose job is not active (its end was settled by a process that died
        before deleting it, or the submit failed between the file and the record)."""
        removed = 0
        cutoff = time.time() - grace_s
        for path in self.inputs_dir.iterdir():
            try:
                if path.stat().st_mtime > cutoff:
                    continue
            except FileNotFoundError:
                continue
            job = self.get(path.name.lstrip(".").removesuffix(".part"))
            if job is None or job.status not in ACTIVE:
                path.unlink(missing_ok=True)
                removed += 1
        return removed

    def create(self, job: Job) -> Job:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(job)
        return job

    def get(self, job_id: str, user_id: int | None = None) -> Job | None:
        """The job, or None if it does not exist or belongs to someone else."""
        with Session(self.engine) as s:
            job = s.get(Job, job_id)
            return job if job is not None and (user_id is None or job.user_id == user_id) else None

    def recent(self, user_id: int, limit: int, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """The user's jobs, newest first: at most `limit`, after `cursor` (from the previous page);
        and the cursor of the next page, None on the last. A keyset cursor (creation time, id), so
        jobs created meanwhile neither repeat nor shift a later page. ValueError: a bad cursor."""
        q = select(Job).where(Job.user_id == user_id)
        if cursor:
            created, job_id = decode_cursor(cursor)
            q = q.where(or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id)))
        with Session(self.engine) as s:
            jobs = list(s.exec(q.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1)).all())
        more = len(jobs) > limit
        jobs = jobs[:limit]
        return jobs, encode_cursor(jobs[-1]) if more else None

    def by_event(self, usage_event_id: str) -> Job | None:
        with Session(self.engine) as s:
            return s.exec(select(Job).where(Job.usage_event_id == usage_event_id)).first()

    def _cas(self, job_id: str, allowed: tuple[str, ...], where: tuple = (), **values) -> bool:
        with Session(self.engine) as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(allowed), *where).values(**values))
            return res.rowcount == 1

    def start(self, job_id: str, device: str, fallback: bool, reason: str | None,
              replica: str | None = None) -> bool:
        return self._cas(job_id, ("queued",), status="running", started_at=utcnow(), device=device,
                         fallback=fallback, fallback_reason=reason, replica=replica)

    def active(self, status: str) -> list[Job]:
        """Jobs in `status` (queued or running), oldest first."""
        with Session(self.engine) as s:
            return list(s.exec(select(Job).where(Job.status == status).order_by(Job.created_at)).all())

    def retry(self, job: Job) -> bool:
        """Back to `queued` for another run (its input is still stored), counted in `attempts`;
        a CAS on the state read (status, replica, attempts), so that of two dispatchers that saw
        the same lost run only one retries it, and a run that ended the job after all wins."""
        return self._cas(job.id, tuple(set(ACTIVE) & {job.status}), same_run(job), status="queued", started_at=None, progress=0.0,
                         device=None, replica=None, attempts=(job.attempts or 0) + 1)

    def progress(self, job_id: str, fraction: float) -> None:
        self._cas(job_id, ("running",), progress=round(fraction, 4))

    def finish(self, job: Job | str, status: str, *, refund_reason: str | None = None,
               only_from: tuple[str, ...] = ACTIVE, where: tuple = (), **values) -> bool:
        """End an active job; settle its usage (commit if done, refund otherwise). False if it had
        already ended, or was not in `only_from` (("queued",): only if no run has started it;
        a started job is its run's to end). Nothing is settled twice: the usage event has its
        own CAS too."""
        job = job if isinstance(job, Job) else self.get(job)
        if job is None:
            return False
        values |= {"status": status, "finished_at": utcnow()}
        if status == "done":
            values["progress"] = 1.0
        with Session(self.engine) as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job.id, Job.status.in_(only_from), *where).values(**values))
            if res.rowcount != 1:
                return False
            if job.webhook:  # in the same transaction: an ended job always has its event
                for k, v in values.items():
                    setattr(job, k, v)
                s.add(new_event(job.id, job.user_id, job.webhook, status, describe(job)))
            # and its settled usage: settled apart, a reader (or a crash) found a done job whose
            # charge was still reserved, which the sweeper would later have refunded
            settle_in(s, job.usage_event_id, ok=status == "done",
                      reason=None if status == "done" else (refund_reason or status))
        self.drop_input(job.id)
        return True

    def fail_orphans(self) -> int:
        """Active jobs whose reservation the sweeper released: their worker is gone."""
        from entitlements.schema import UsageEvent

        with Session(self.engine) as s:
            ids = s.exec(select(Job.id).join(UsageEvent, UsageEvent.id == Job.usage_event_id)
                         .where(Job.status.in_(ACTIVE), UsageEvent.status == "released")).all()
        # through finish, like any end, so that its webhook event is recorded; its usage event is
        # released already, and settling it again changes nothing
        return sum(self.finish(i, "failed", error="lost: the worker running it stopped (refunded)",
                               refund_reason="expired: swept") for i in ids)

    def expire_results(self, older_than_s: int) -> int:
        """Delete result files of jobs that ended more than `older_than_s` ago."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with Session(self.engine) as s:
            ids = s.exec(select(Job.id).where(Job.finished_at < cutoff, Job.results_deleted_at.is_(None))).all()
        for job_id in ids:
            shutil.rmtree(self.result_dir(job_id), ignore_errors=True)
            self._cas(job_id, ("done", "failed", "cancelled"), results_deleted_at=utcnow())
        return len(ids)


def same_run(job: Job) -> tuple:
    """Conditions that hold while the record is still at the run `job` was read at."""
    return ((Job.replica == job.replica) if job.replica is not None else Job.replica.is_(None),
            (Job.attempts == job.attempts) if job.attempts is not None else Job.attempts.is_(None))


def spec_of(job: Job) -> dict:
    """What the dispatcher and the model replica need to run the job, from its record alone."""
    return {"job_id": job.id, "task": job.task, "variant": job.variant, "model": job.model,
            "priority": job.priority, "format": job.format, "bitrate": job.bitrate, "normalize": job.normalize,
            "usage_event_id": job.usage_event_id}


def encode_cursor(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created, job_id = raw.split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as e:  # binascii.Error is a ValueError
        raise ValueError("not a cursor this service gave out") from e


def describe(job: Job, base: str = "") -> dict:
    """The job as the API shows it (without debug metadata)."""
    queued_s = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    run_s = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    stems = None
    if job.status == "done" and job.stems and job.results_deleted_at is None:
        stems = {name: f"{base}/api/jobs/{job.id}/stems/{name}.{job.format}" for name in job.stems}
    # jobs finished before previews existed have none; their metadata says so
    preview = (job.engine_metadata or {}).get("preview") if stems else None
    out = {
        "job_id": job.id, "status": job.status, "task": job.task, "variant": job.variant, "plan": job.plan,
        "progress": job.progress, "device": job.device, "fallback": job.fallback,
        "fallback_reason": job.fallback_reason, "duration_s": round(job.input_seconds, 3),
        "source_name": job.source_name, "format": job.format, "bitrate_kbps": job.bitrate,
        "normalize": job.normalize, "stems": stems,
        "archive": f"{base}/api/jobs/{job.id}/stems.zip" if stems else None,
        "previews": {name: f"{base}/api/jobs/{job.id}/previews/{name}.{preview['format']}" for name in stems}
        if preview else None,
        "peaks": f"{base}/api/jobs/{job.id}/peaks" if preview else None,
        "entitlement": job.entitlement, "error": job.error,
        "created_at": iso(job.created_at), "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "timings": {"queued_s": round(queued_s, 3) if queued_s is not None else None,
                    "run_s": round(run_s, 3) if run_s is not None else None},
    }
    if job.results_deleted_at is not None:
        out["results_deleted_at"] = iso(job.results_deleted_at)
    if job.random_weights:
        out["random_weights"] = True
        out["warning"] = "this deployment runs untrained (random) weights: the stems are not a separation"
    return out
