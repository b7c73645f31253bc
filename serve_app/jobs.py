"""Durable job records, in the same database as the entitlements.

A job's state survives the restart of any replica: the ingress creates it (queued), the
model replica marks it running and reports progress, and whoever ends it (the replica, or
the dispatcher for jobs that never reached one) moves it to done, failed or cancelled by a
compare-and-set on its current state, then settles its usage event: committed when done,
released (refunded) otherwise.
"""

from __future__ import annotations

import logging
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from typing import Optional

from sqlalchemy import JSON, Column, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from entitlements import settle
from entitlements.schema import iso, utcnow

log = logging.getLogger(__name__)

ACTIVE = ("queued", "running")


class Job(SQLModel, table=True):
    __tablename__ = "jobs"
    id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    task: str  # separate | clean | enhance
    variant: str
    model: str  # two_stem | five_stem
    plan: str
    priority: str
    status: str = "queued"
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

    def result_dir(self, job_id: str) -> Path:
        return self.results_dir / job_id

    def create(self, job: Job) -> Job:
        with Session(self.engine, expire_on_commit=False) as s, s.begin():
            s.add(job)
        return job

    def get(self, job_id: str, user_id: int | None = None) -> Job | None:
        """The job, or None if it does not exist or belongs to someone else."""
        with Session(self.engine) as s:
            job = s.get(Job, job_id)
            return job if job is not None and (user_id is None or job.user_id == user_id) else None

    def by_event(self, usage_event_id: str) -> Job | None:
        with Session(self.engine) as s:
            return s.exec(select(Job).where(Job.usage_event_id == usage_event_id)).first()

    def _cas(self, job_id: str, allowed: tuple[str, ...], **values) -> bool:
        with Session(self.engine) as s, s.begin():
            res = s.execute(update(Job).where(Job.id == job_id, Job.status.in_(allowed)).values(**values))
            return res.rowcount == 1

    def start(self, job_id: str, device: str, fallback: bool, reason: str | None) -> bool:
        return self._cas(job_id, ("queued",), status="running", started_at=utcnow(), device=device,
                         fallback=fallback, fallback_reason=reason)

    def progress(self, job_id: str, fraction: float) -> None:
        self._cas(job_id, ("running",), progress=round(fraction, 4))

    def finish(self, job: Job | str, status: str, *, refund_reason: str | None = None,
               only_from: tuple[str, ...] = ACTIVE, **values) -> bool:
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
        if not self._cas(job.id, only_from, **values):
            return False
        settle(self.engine, job.usage_event_id, ok=status == "done",
               reason=None if status == "done" else (refund_reason or status))
        return True

    def fail_orphans(self) -> int:
        """Active jobs whose reservation the sweeper released: their worker is gone."""
        from entitlements.schema import UsageEvent

        with Session(self.engine) as s:
            ids = s.exec(select(Job.id).join(UsageEvent, UsageEvent.id == Job.usage_event_id)
                         .where(Job.status.in_(ACTIVE), UsageEvent.status == "released")).all()
        return sum(self._cas(i, ACTIVE, status="failed", finished_at=utcnow(),
                             error="lost: the worker running it stopped (refunded)") for i in ids)

    def expire_results(self, older_than_s: int) -> int:
        """Delete result files of jobs that ended more than `older_than_s` ago."""
        cutoff = utcnow() - timedelta(seconds=older_than_s)
        with Session(self.engine) as s:
            ids = s.exec(select(Job.id).where(Job.finished_at < cutoff, Job.results_deleted_at.is_(None))).all()
        for job_id in ids:
            shutil.rmtree(self.result_dir(job_id), ignore_errors=True)
            self._cas(job_id, ("done", "failed", "cancelled"), results_deleted_at=utcnow())
        return len(ids)


def describe(job: Job, base: str = "") -> dict:
    """The job as the API shows it (without debug metadata)."""
    queued_s = (job.started_at - job.created_at).total_seconds() if job.started_at else None
    run_s = (job.finished_at - job.started_at).total_seconds() if job.finished_at and job.started_at else None
    stems = None
    if job.status == "done" and job.stems and job.results_deleted_at is None:
        stems = {name: f"{base}/api/jobs/{job.id}/stems/{name}.{job.format}" for name in job.stems}
    out = {
        "job_id": job.id, "status": job.status, "task": job.task, "variant": job.variant, "plan": job.plan,
        "progress": job.progress, "device": job.device, "fallback": job.fallback,
        "fallback_reason": job.fallback_reason, "duration_s": round(job.input_seconds, 3),
        "source_name": job.source_name, "format": job.format, "bitrate_kbps": job.bitrate,
        "normalize": job.normalize, "stems": stems,
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
