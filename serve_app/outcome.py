"""Who decides how a job ended: its record, written by whoever owned the job at that moment.

The ingress waits on the dispatcher only to learn *when* to look; what it reports is the job
record. That matters when the dispatcher dies: its model calls go on in the replicas, which
end their jobs (done and charged, or failed and refunded) by a compare-and-set on the record,
and its queued jobs stay `queued` records with their inputs stored, which the next
dispatcher queues again (serve_app/recovery.py). So after the dispatcher stops answering the
ingress follows the record until it has ended, whoever ends it.
"""

from __future__ import annotations

import asyncio

from .jobs import ACTIVE, Job, JobStore

POLL_S = 0.5


async def follow_record(jobs: JobStore, job_id: str, poll_s: float = POLL_S) -> Job:
    """The job's record once it has ended (call it when the dispatcher no longer holds the job)."""
    while True:
        job = await asyncio.to_thread(jobs.get, job_id)
        if job.status not in ACTIVE:
            return job
        await asyncio.sleep(poll_s)
