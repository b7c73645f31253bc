"""The dispatcher: one replica holding a priority queue per model deployment.

Serve has no request priority, and its own router queues FIFO (not even strictly), so the
dispatcher is the models' only caller and forwards a job only when a slot is free: per
model it runs `slots` worker coroutines (replicas × max_ongoing_requests), each taking the
best queued job and awaiting the model. Serve's router therefore never holds a queue of
ours, and Serve's strict max_ongoing_requests=1 is only the safety net.

The audio travels as an ObjectRef nested in a list, which Ray passes through untouched; a
worker hands it to the model as a top-level argument, which Ray resolves inside the model
replica. The samples never enter this process.

Outcomes decided here, and settled here: rejected (queue full → 503, refunded), cancelled
while queued (the caller disconnected or sent DELETE → refunded), lost (the model replica
died → failed, refunded). Jobs that reach a model are ended by the model replica itself.
"""

from __future__ import annotations

import asyncio
import logging
import time

from ray import serve
from ray.serve.handle import DeploymentHandle

from entitlements import open_database, sweep

from .jobs import JobStore
from .metrics import Metrics
from .queue import PriorityJobQueue, QueueFull
from .settings import Settings

log = logging.getLogger("ray.serve")


class Rejected(Exception):
    """The job was not queued (queue full); carries the Retry-After seconds."""

    def __init__(self, message: str, retry_after: int):
        super().__init__(message)
        self.retry_after = retry_after


class Cancelled(Exception):
    pass


@serve.deployment(num_replicas=1, max_ongoing_requests=10000, ray_actor_options={"num_cpus": 0},
                  graceful_shutdown_timeout_s=5)
class Dispatcher:
    def __init__(self, models: dict[str, DeploymentHandle], slots: dict[str, int], settings: dict):
        self.s = Settings(**settings)
        self.db = open_database(self.s.database_url, sync_plans=False)
        self.jobs = JobStore(self.db, self.s.results_dir)
        self.handles = {name: h.options(method_name="run") for name, h in models.items()}
        self.queues = {name: PriorityJobQueue(self.s.queue_max_depth, self.s.aging_s) for name in models}
        self.running: dict[str, object] = {}
        self.metrics = Metrics()
        self._tasks = [asyncio.get_event_loop().create_task(self._worker(name))
                       for name, n in slots.items() for _ in range(n)]
        self._tasks.append(asyncio.get_event_loop().create_task(self._housekeeping()))

    def _gauge(self, model: str) -> None:
        for level, depth in self.queues[model].depth().items():
            self.metrics.queue_depth.set(depth, tags={"model": model, "priority": level})

    async def submit(self, spec: dict, audio: list) -> dict:
        """Queue a job and wait for its outcome; `audio` is [ObjectRef] (kept a reference)."""
        model, job_id = spec["model"], spec["job_id"]
        queue = self.queues[model]
        try:
            entry = queue.put(job_id, spec["priority"], (spec, audio[0]))
        except QueueFull as e:
            await asyncio.to_thread(self.jobs.finish, job_id, "failed", error=str(e), refund_reason="queue full")
            self.metrics.outcomes.inc(tags={"model": model, "outcome": "rejected"})
            raise Rejected(str(e), self.s.retry_after_s) from None
        entry.future = asyncio.get_running_loop().create_future()
        self._gauge(model)
        try:
            return await entry.future
        except asyncio.CancelledError:
            # the caller went away (disconnect or timeout): a queued job leaves the queue and is
            # refunded; a running one is cancelled explicitly (Serve does not do it for us)
            await self._cancel(job_id, "the caller disconnected")
            raise

    async def cancel(self, job_id: str) -> str:
        return await self._cancel(job_id, "cancelled by the caller")

    async def _cancel(self, job_id: str, why: str) -> str:
        for model, queue in self.queues.items():
            entry = queue.cancel(job_id)
            if entry is not None:
                self._gauge(model)
                await asyncio.to_thread(self.jobs.finish, job_id, "cancelled", error=why, refund_reason=why)
                self.metrics.outcomes.inc(tags={"model": model, "outcome": "cancelled"})
                if entry.future is not None and not entry.future.done():
                    entry.future.set_exception(Cancelled(why))
                return "cancelled"
        response = self.running.get(job_id)
        if response is not None:
            response.cancel()  # the replica stops at the next chunk and ends the job itself
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
            spec, ref = entry.payload
            self.metrics.queue_wait.observe(time.monotonic() - entry.enqueued,
                                            tags={"model": model, "priority": spec["priority"]})
            response = handle.remote(spec, ref)
            self.running[entry.job_id] = response
            started = time.monotonic()
            try:
                result = await response
            except Exception as e:  # the replica died, or the call was cancelled under it
                log.exception("job %s on %s did not return", entry.job_id, model)
                cancelled = type(e).__name__ in ("RequestCancelledError", "TaskCancelledError")
                status = "cancelled" if cancelled else "failed"
                await asyncio.to_thread(self.jobs.finish, entry.job_id, status,
                                        error="cancelled" if cancelled else "the model replica failed",
                                        refund_reason=f"{status}: {type(e).__name__}")
                result = {"status": status}
            finally:
                self.running.pop(entry.job_id, None)
            self.metrics.run_time.observe(time.monotonic() - started, tags={"model": model})
            self.metrics.outcomes.inc(tags={"model": model, "outcome": result.get("status", "unknown")})
            if result.get("fallback"):
                self.metrics.fallbacks.inc(tags={"model": model})
            if not entry.future.done():
                entry.future.set_result(result)

    async def _housekeeping(self) -> None:
        """Release reservations of dead workers' jobs; delete results past their retention."""
        while True:
            await asyncio.sleep(self.s.housekeeping_s)
            try:
                released = await asyncio.to_thread(sweep, self.db)
                await asyncio.to_thread(self.jobs.fail_orphans)
                expired = await asyncio.to_thread(self.jobs.expire_results, self.s.results_ttl_s)
                if released or expired:
                    log.info("housekeeping: %d reservations released, %d results deleted", released, expired)
            except Exception:
                log.exception("housekeeping failed; retrying next round")

    def check_health(self) -> None:
        dead = [t for t in self._tasks if t.done()]
        if dead:
            raise RuntimeError(f"{len(dead)} dispatcher tasks stopped: {dead[0].exception()!r}")
