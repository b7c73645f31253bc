"""Who decides how a job ended: its record, written by whoever owned the job at that moment.

The ingress waits on the dispatcher only to learn *when* to look; what it reports is the job
record. That matters when the dispatcher dies mid-job: its model call goes on in the replica,
which ends the job (done and charged, or failed and refunded) by a compare-and-set on the
record. So after the dispatcher stops answering the ingress follows the record:

- ended: that is the outcome;
- running: a replica owns it; keep reading until the run ends it (or, if the run dies and stops
  renewing its reservation, until the sweeper fails it);
- queued: the dispatcher that held it is gone and no replica took it, so nobody will run it:
  it is failed and refunded, by a CAS that only a still-queued job passes (a replica's start
  and this cannot both win).
"""

from __future__ import annotations

import asyncio

from .jobs import Job, JobStore

POLL_S = 0.5
LOST_QUEUED = "the dispatcher holding the queued job stopped; it was refunded"


async def follow_record(jobs: JobStore, job_id: str, poll_s: float = POLL_S) -> Job:
    """The job's record once it has ended (call it when the dispatcher no longer holds the job)."""
    while True:
        job = await asyncio.to_thread(jobs.get, job_id)
        if job.status == "queued":
            await asyncio.to_thread(jobs.finish, job_id, "failed", error=LOST_QUEUED,
                                    refund_reason="dispatcher lost the queued job", only_from=("queued",))
            continue  # re-read: a replica may have started it first
        if job.status != "running":
            return job
        await asyncio.sleep(poll_s)
