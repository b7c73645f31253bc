"""What a dispatcher may rebuild from the job records, so that it can be killed at any time.

The queue lives in the Dispatcher's memory, but every job in it is also a `queued` record
whose input is stored (serve_app/jobs.py). A new Dispatcher replica, a restarted application,
and every dispatcher again each `recovery_s`, put each queued record that they do not hold
into their queue by priority and arrival time, as if it had never left.

A `running` record names the model replica (its Ray actor) that started it. When Ray says that
actor no longer exists, that run can never end the job: it is queued again, at most
`run_retries` times, and then failed and refunded. Ray's word is required: an actor that
cannot be looked up for another reason (the GCS is slow, say) decides nothing, and the
run's own reservation still bounds how long such a job can stay charged.
"""

from __future__ import annotations

import logging

import ray

from .jobs import ACTIVE, Job, JobStore, same_run

log = logging.getLogger("ray.serve")

SERVE_NAMESPACE = "serve"  # where Serve names its replicas' actors
LOST_RUN = "the model replica running it stopped, and it had been retried already; it was refunded"


def replica_name() -> str | None:
    """This model replica's actor name, as a record's `replica`; None outside Ray (local testing)."""
    if not ray.is_initialized():
        return None
    try:
        return ray.get_runtime_context().get_actor_name()
    except Exception:  # noqa: BLE001 (not an actor: nobody could look it up later either)
        return None


def replica_exists(name: str) -> bool | None:
    """True or False on Ray's word; None when Ray could not say. Blocking: call it in a thread."""
    try:
        ray.get_actor(name, namespace=SERVE_NAMESPACE)
        return True
    except ValueError:  # Ray's answer for a name no live actor holds
        return False
    except Exception as e:  # noqa: BLE001
        log.warning("could not look up replica %s (%s); deciding nothing", name, type(e).__name__)
        return None


def settle_lost_run(jobs: JobStore, job: Job, retries: int) -> str | None:
    """The job as read (`running` on a replica now gone, or `queued` whose call died with its
    replica) is queued again while it has retries left, else failed and refunded. Returns
    "requeued", "failed", or None when the record had already moved on (another run, or its
    end): blocking, call it in a thread."""
    if job.status not in ACTIVE:  # ended as read: nothing is lost
        return None
    if (job.attempts or 0) < retries and jobs.input_path(job.id).is_file() and jobs.retry(job):
        log.warning("job %s: its run on %s was lost; queued again (attempt %d)", job.id, job.replica,
                    (job.attempts or 0) + 2)
        return "requeued"
    if jobs.finish(job, "failed", error=LOST_RUN, refund_reason="model replica lost", only_from=(job.status,),
                   where=same_run(job)):
        log.error("job %s: its run on %s was lost after %d retries; failed and refunded", job.id, job.replica,
                  job.attempts or 0)
        return "failed"
    return None
