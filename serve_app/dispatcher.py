"""The dispatcher: one replica holding a priority queue per model deployment.

Serve has no request priority, and its own router queues FIFO (not even strictly), so the
dispatcher is the models' only caller and forwards a job only when a slot is free: per
model it runs `slots` worker coroutines (replicas × max_ongoing_requests), each taking the
best queued job and awaiting the model. Serve's router therefore never holds a queue of
ours, and Serve's strict max_ongoing_requests=1 is only the safety net.

The dispatcher holds no state that the job records do not: the input of every job lies in
the data folder before the job is queued (the model replica reads it there), and a new
replica rebuilds the queue from the `queued` records, then keeps reconciling every
`recovery_s` (serve_app/recovery.py). So the replica can be killed at any time: its queued
jobs wait for the next one, in their order; runs it had started go on and settle themselves.

Outcomes decided here, and settled here: rejected (queue full: refunded, and said to the
caller as a return value), cancelled while queued (the caller sent DELETE: refunded), lost before it started (refunded). A job that reached a model replica is settled
by that run, never here on a guess: only a verified death of the replica (Ray's
ActorDiedError, or Ray's word that the named actor is gone) makes the dispatcher retry the
job once or fail and refund it, and otherwise it settles only jobs that had not started. Any other
error of the call (a timeout, an unreachable actor) leaves the running job to its run, whose
reservation the run keeps alive; the sweeper settles it only once that stops.

Back-pressure crosses Ray as data: `enqueue` answers {"queued": False, "reason":
"queue-full", …} rather than raising a custom exception, because an exception class with its
own constructor arguments cannot be rebuilt in the caller (Ray raised
UnserializableException there, and the ingress reported an outage instead of a full queue).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timezone

from ray import serve
from ray.serve.handle import DeploymentHandle

from entitlements import extend, open_database, sweep
from entitlements.schema import utcnow

from .jobs import Job, JobStore, spec_of
from .metrics import Metrics
from .queue import Entry, PriorityJobQueue, QueueFull
from .recovery import replica_exists, settle_lost_run
from .webhooks import Deliverer
from .settings import Settings

log = logging.getLogger("ray.serve")


WEBHOOK_POLL_S = 0.5  # how often pending webhook deliveries are looked for
CANCELLED_ERRORS = ("RequestCancelledError", "TaskCancelledError")
# Ray's word that the replica's process is gone (ActorDiedError and its subclasses): only then
# may anyone but the run itself settle a job that had started.
DEATH_ERRORS = ("ActorDiedError", "OutOfMemoryError", "NodeDiedError")


def replica_died(e: BaseException) -> bool:
    return any(t.__name__ in DEATH_ERRORS for t in type(e).__mro__)


@serve.deployment(num_replicas=1, max_ongoing_requests=10000, ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=5)
class Dispatcher:
    def __init__(self, models: dict[str, DeploymentHandle], slots: dict[str, int], settings: dict):
        self.s = Settings(**settings)
        self.db = open_database(self.s.database_url, sync_plans=False)
        self.jobs = JobStore(self.db, self.s.results_dir)
        self.handles = {name: h.options(method_name="run") for name, h in models.items()}
        self.queues = {name: PriorityJobQueue(self.s.queue_max_depth, self.s.aging_s) for name in models}
        self.entries: dict[str, Entry] = {}  # every job this replica holds, queued or running
        self.running: dict[str, tuple[object, str]] = {}  # job id → (model call, usage event id)
        self.metrics = Metrics()
        self._tasks = [asyncio.get_event_loop().create_task(self._worker(name))
                       for name, n in slots.items() for _ in range(n)]
        self.deliverer = Deliverer(self.db, self.s.webhook_allow_private, self.s.webhook_first_retry_s,
                                   self.s.webhook_retry_window_s, self.s.webhook_timeout_s)
        self._loops = [asyncio.get_event_loop().create_task(loop())
                       for loop in (self._housekeeping, self._recovery, self._webhooks)]
        self._tasks += self._loops

    def _gauge(self, model: str) -> None:
        for level, depth in self.queues[model].depth().items():
            self.metrics.queue_depth.set(depth, tags={"model": model, "priority": level})

    def _resolve(self, entry: Entry, outcome: dict) -> None:
        self.entries.pop(entry.job_id, None)
        if entry.future is not None and not entry.future.done():
            entry.future.set_result(outcome)

    def _hold(self, spec: dict, *, enqueued: float | None = None, force: bool = False) -> Entry:
        entry = self.queues[spec["model"]].put(spec["job_id"], spec["priority"], spec, enqueued=enqueued, force=force)
        entry.future = asyncio.get_running_loop().create_future()
        self.entries[spec["job_id"]] = entry
        self._gauge(spec["model"])
        return entry

    async def enqueue(self, spec: dict) -> dict:
        """Queue a job (its record and stored input exist) and answer at once.

        {"queued": True, "position": n}, or {"queued": False, "reason": "queue-full", "detail",
        "retry_after"}: a full queue is an answer, not an exception (see the module's docstring);
        the refused job is already failed and refunded when this returns."""
        model, job_id = spec["model"], spec["job_id"]
        queue = self.queues[model]
        if job_id in self.entries:  # a recovery round found its record first
            return {"queued": True, "position": queue.position(job_id)}
        try:
            self._hold(spec)
        except QueueFull as e:
            await asyncio.to_thread(self.jobs.finish, job_id, "failed", error=f"refused: {e}",
                                    refund_reason="queue full")
            self.metrics.outcomes.inc(tags={"model": model, "outcome": "rejected"})
            return {"queued": False, "reason": "queue-full", "detail": str(e), "retry_after": self.s.retry_after_s}
        return {"queued": True, "position": queue.position(job_id)}

    async def wait(self, job_id: str) -> dict:
        """The job's outcome ({"status": …}) once it ends here; {"status": "unknown"} for a job
        this replica does not hold (it ended already, or was queued with a replica now gone).
        The job record is the truth either way; this only says when to read it. A caller that
        stops waiting (its wait ran out, its client disconnected) leaves the job as it is."""
        entry = self.entries.get(job_id)
        if entry is None:
            return {"status": "unknown"}
        return await asyncio.shield(entry.future)

    async def cancel(self, job_id: str) -> str:
        return await self._cancel(job_id, "cancelled by the caller")

    async def _cancel(self, job_id: str, why: str) -> str:
        for model, queue in self.queues.items():
            entry = queue.cancel(job_id)
            if entry is not None:
                self._gauge(model)
                await asyncio.to_thread(self.jobs.finish, job_id, "cancelled", error=why, refund_reason=why)
                self.metrics.outcomes.inc(tags={"model": model, "outcome": "cancelled"})
                self._resolve(entry, {"status": "cancelled"})
                return "cancelled"
        running = self.running.get(job_id)
        if running is not None:
            running[0].cancel()  # the replica stops at the next chunk and ends the job itself
            return "cancelling"
        return "not_queued"

    async def position(self, job_id: str) -> int | None:
        for queue in self.queues.values():
            pos = queue.position(job_id)
            if pos is not None:
                return pos
        return None

    async def depth(self) -> dict:
        return {model: q.depth() for model, q in self.queues.items()}

    async def _worker(self, model: str) -> None:
        queue, handle = self.queues[model], self.handles[model]
        while True:
            entry = await queue.get()
            self._gauge(model)
            if entry.future is None or entry.future.done():
                continue
            spec = entry.payload
            self.metrics.queue_wait.observe(time.monotonic() - entry.enqueued,
                                            tags={"model": model, "priority": spec["priority"]})
            response = handle.remote(spec)
            self.running[entry.job_id] = (response, spec["usage_event_id"])
            started = time.monotonic()
            try:
                result = await response
            except Exception as e:
                result = {"status": await asyncio.to_thread(self._call_failed, entry.job_id, model, e)}
            finally:
                self.running.pop(entry.job_id, None)
            self.metrics.run_time.observe(time.monotonic() - started, tags={"model": model})
            self.metrics.outcomes.inc(tags={"model": model, "outcome": result.get("status", "unknown")})
            if result.get("fallback"):
                self.metrics.fallbacks.inc(tags={"model": model})
            if result["status"] == "requeued":  # its replica died; it runs again, keeping its place
                again = queue.put(entry.job_id, spec["priority"], spec, enqueued=entry.enqueued, force=True)
                again.future, self.entries[entry.job_id] = entry.future, again
                self._gauge(model)
                continue
            self._resolve(entry, result)

    def _call_failed(self, job_id: str, model: str, e: Exception) -> str:
        """Settle what this side may settle after the model call raised; the status to report."""
        if type(e).__name__ in CANCELLED_ERRORS:
            # a started job is ended by its run (it stops at the next chunk); one that never
            # started has nobody else to end it
            self.jobs.finish(job_id, "cancelled", error="cancelled", refund_reason="cancelled before it started",
                             only_from=("queued",))
            return "cancelled"
        if replica_died(e):
            log.error("job %s: the %s replica died under it: %s", job_id, model, e)
            job = self.jobs.get(job_id)
            if job is None or job.status not in ("queued", "running"):
                return job.status if job is not None else "failed"
            return settle_lost_run(self.jobs, job, self.s.run_retries) or "running-elsewhere"
        # not a verified death: a running job stays its run's to settle (its reservation lapses,
        # and the sweeper fails it, only if the run stops reporting progress)
        log.warning("job %s: the call to %s raised %s; its run, if it started, settles it", job_id, model,
                    type(e).__name__)
        if self.jobs.finish(job_id, "failed", error="the job could not be started; refunded",
                            refund_reason=f"not started: {type(e).__name__}", only_from=("queued",)):
            return "failed"
        return "running-elsewhere"

    async def _recovery(self) -> None:
        """Rebuild the queue from the records at start, then reconcile every `recovery_s`."""
        while True:
            try:
                await self._recover()
            except Exception:
                log.exception("recovery round failed; retrying next round")
            await asyncio.sleep(self.s.recovery_s)

    def _arrival(self, job: Job) -> float:
        """The job's arrival on the queues' (monotonic) clock, from its record."""
        created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=timezone.utc)
        return time.monotonic() - max(0.0, (utcnow() - created).total_seconds())

    async def _recover(self) -> None:
        rebuilt = 0
        for job in await asyncio.to_thread(self.jobs.active, "queued"):
            if job.id not in self.entries:
                self._hold(spec_of(job), enqueued=self._arrival(job), force=True)
                rebuilt += 1
        if rebuilt:
            log.warning("queued %d jobs from their records (a previous dispatcher held them)", rebuilt)
        for job in await asyncio.to_thread(self.jobs.active, "running"):
            # this replica's own calls are settled by the worker that made them
            if job.id in self.entries or job.replica is None:
                continue
            if await asyncio.to_thread(replica_exists, job.replica) is not False:
                continue
            outcome = await asyncio.to_thread(settle_lost_run, self.jobs, job, self.s.run_retries)
            if outcome == "requeued":
                self._hold(spec_of(job), enqueued=self._arrival(job), force=True)
            elif outcome == "failed":
                self.metrics.outcomes.inc(tags={"model": job.model, "outcome": "failed"})

    async def _webhooks(self) -> None:
        """Send due webhook deliveries (durable: a new replica sends what this one did not)."""
        while True:
            try:
                sent = await self.deliverer.round()
            except Exception:
                log.exception("webhook round failed; retrying next round")
                sent = 0
            if not sent:
                await asyncio.sleep(WEBHOOK_POLL_S)

    async def _housekeeping(self) -> None:
        """Release reservations of dead workers' jobs; delete results past their retention."""
        while True:
            await asyncio.sleep(self.s.housekeeping_s)
            try:
                # a job whose model call is in flight here has a live run: keep its reservation
                # (the run also extends it from its progress, which covers a restarted dispatcher)
                for _, event_id in list(self.running.values()):
                    await asyncio.to_thread(extend, self.db, event_id, self.s.reservation_ttl_s)
                released = await asyncio.to_thread(sweep, self.db)
                await asyncio.to_thread(self.jobs.fail_orphans)
                expired = await asyncio.to_thread(self.jobs.expire_results, self.s.results_ttl_s)
                await asyncio.to_thread(self.jobs.expire_inputs)
                if released or expired:
                    log.info("housekeeping: %d reservations released, %d results deleted", released, expired)
            except Exception:
                log.exception("housekeeping failed; retrying next round")

    async def __del__(self) -> None:
        # Serve calls this on graceful shutdown: stop the background loops before the replica's
        # thread pool goes, or each logged a traceback at ERROR ("cannot schedule new futures
        # after shutdown") on every ordinary stop. The workers are left alone: cancelling one
        # would cancel its model call, and the run it started must go on and settle itself.
        for task in self._loops:
            task.cancel()

    def check_health(self) -> None:
        dead = [t for t in self._tasks if t.done()]
        if dead:
            raise RuntimeError(f"{len(dead)} dispatcher tasks stopped: {dead[0].exception()!r}")
