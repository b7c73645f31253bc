"""Model deployments: TwoStem (CPU only: the 2-stem and speech engines) and FiveStem (GPU
when the cluster has one, with the engine's CPU fallback). FiveStem's network goes by its
device (`five_stem_size: auto`): the gpu-size checkpoint on a GPU, the cpu-size one on a CPU;
the job's metadata says which (`size`, `checkpoint`, `size_note`).

Each replica takes one job at a time (max_ongoing_requests=1) and gives torch exactly the
CPUs Ray assigned it: two jobs side by side with two threads each on two cores made OpenMP
spin and ran 2–4× slower. A replica runs the engine in a worker thread; a cancelled call
sets a flag that the engine's progress callback turns into an exception at the next chunk,
so the thread stops and the slot frees.

A running job keeps its own reservation alive: every progress report past a quarter of
`reservation_ttl_s` since the last renewal pushes the expiry out again, so the sweeper (which
fails jobs whose reservation lapsed) takes only runs that stopped reporting, whoever started
them and whether or not that dispatcher still exists.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time

import ray
from ray import serve

from entitlements import extend, open_database
from models.engine import SeparationEngine
from models.mastering import enhance_highpass

from .jobs import JobStore
from .recovery import replica_name
from .results import write_previews
from .settings import Settings

log = logging.getLogger("ray.serve")

PROGRESS_EVERY_S = 0.5


class JobCancelled(Exception):
    pass


class Keepalive:
    """Renews a running job's reservation from its progress (see the module's docstring)."""

    def __init__(self, db, event_id: str, ttl_s: int):
        self.db, self.event_id, self.ttl_s = db, event_id, ttl_s
        self.renewed = 0.0

    def renew(self, now: float | None = None) -> None:
        extend(self.db, self.event_id, self.ttl_s)
        self.renewed = time.monotonic() if now is None else now

    def maybe_renew(self, now: float) -> None:
        # a quarter of the TTL: three renewals may be missed (a slow chunk) before it lapses
        if now - self.renewed >= self.ttl_s / 4:
            try:
                self.renew(now)
            except Exception:  # a database hiccup must not fail the job; the next chunk retries
                log.exception("could not renew the reservation %s", self.event_id)


def assigned_cpus(configured: float) -> int:
    # Serve's local testing mode (tests) runs replicas without Ray, where asking Ray would start
    # a cluster: the configured CPUs stand in for the assigned ones there
    if not ray.is_initialized():
        return max(1, math.floor(configured))
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    return max(1, math.floor(cpus))


class ModelReplica:
    mode = "cpu_only"
    variants: tuple[str, ...] = ()
    cpus_setting = "two_stem_cpus"
    size_setting: str | None = None  # the setting naming the network size; None: the cpu size

    def model_size(self) -> str:
        return getattr(self.s, self.size_setting) if self.size_setting else "cpu"

    def __init__(self, settings: dict):
        import torch

        self.s = Settings(**settings)
        self.db = open_database(self.s.database_url, sync_plans=False)
        self.jobs = JobStore(self.db, self.s.results_dir)
        self.replica = replica_name()  # recorded on every job it starts: the dispatcher checks it is alive
        threads = assigned_cpus(getattr(self.s, self.cpus_setting))
        torch.set_num_threads(threads)
        self.engines = {
            v: SeparationEngine(v, mode=self.mode, device="auto", size=self.model_size(),
                                random_weights=self.s.random_weights, threads=threads,
                                chunk_seconds=self.s.chunk_seconds, overlap_seconds=self.s.overlap_seconds,
                                config_overrides=self.s.model_overrides, batch_size=self.s.batch_size,
                                max_batch=self.s.max_batch, shifts=self.s.shifts.get(v))
            for v in self.variants
        }
        for v, e in self.engines.items():
            log.info("%s: %s on %s, %s size (%s; threads %d, %d pass(es) per chunk, weights %s%s%s)",
                     type(self).__name__, v, e.choice.device, e.loaded.size, e.loaded.checkpoint or "random weights",
                     threads, e.shifts,
                     e.weights_sha256[:12], ", fallback: " + e.choice.reason if e.choice.fallback else "",
                     "; " + e.loaded.note if e.loaded.note else "")

    async def run(self, spec: dict) -> dict:
        """Run a queued job from its stored input (serve_app/jobs.py)."""
        cancel = threading.Event()
        work = asyncio.get_running_loop().run_in_executor(None, self._run, spec, cancel)
        try:
            return await asyncio.shield(work)
        except asyncio.CancelledError:
            cancel.set()
            await asyncio.wait([work])  # the slot stays busy until the thread has stopped
            raise

    def _run(self, spec: dict, cancel: threading.Event) -> dict:
        job_id = spec["job_id"]
        engine = self.engines[spec["variant"]]
        if not self.jobs.start(job_id, str(engine.choice.device), engine.choice.fallback, engine.choice.reason,
                               self.replica):
            return {"status": "skipped"}  # cancelled between dequeue and start, or run by another call
        keepalive = Keepalive(self.db, spec["usage_event_id"], self.s.reservation_ttl_s)
        keepalive.renew()
        last = [0.0]

        def progress(done: int, total: int) -> None:
            if cancel.is_set():
                raise JobCancelled()
            now = time.monotonic()
            if now - last[0] > PROGRESS_EVERY_S or done == total:
                last[0] = now
                self.jobs.progress(job_id, done / total)
            keepalive.maybe_renew(now)

        enhance = spec["task"] == "enhance"
        try:
            # decoded here from the upload as stored, block by block, with the ingress's limit
            result = engine.separate(
                str(self.jobs.input_path(job_id)), self.jobs.result_dir(job_id), fmt=spec["format"],
                bitrate=spec.get("bitrate"), normalize=spec["normalize"], max_seconds=self.s.max_input_seconds,
                progress=progress, extra_filters=(lambda stem: [enhance_highpass(44100)] if stem == "speech" else [])
                if enhance else None, stems_normalize={"speech": "master"} if enhance else None)
            # part of the result, like the stems: a job whose previews cannot be written fails
            previews = write_previews(self.jobs.result_dir(job_id), result.stems)
        except JobCancelled:
            self.jobs.finish(job_id, "cancelled", error="cancelled while running",
                             refund_reason="cancelled while running")
            return {"status": "cancelled"}
        except Exception as e:
            log.exception("job %s failed", job_id)
            self.jobs.finish(job_id, "failed", error=f"internal error ({type(e).__name__}); the job was refunded",
                             refund_reason=f"{type(e).__name__}: {e}"[:200])
            return {"status": "failed"}
        self.jobs.finish(job_id, "done", device=result.device, fallback=result.fallback,
                         fallback_reason=result.fallback_reason, stems=list(result.stems),
                         engine_metadata=result.metadata | {"preview": previews}, random_weights=engine.random_weights)
        return {"status": "done", "device": result.device, "fallback": result.fallback}

    def check_health(self) -> None:
        if not self.engines:
            raise RuntimeError("no engine loaded")


@serve.deployment(max_ongoing_requests=1, graceful_shutdown_timeout_s=10,
                  ray_actor_options={"num_cpus": 1, "num_gpus": 0,
                                     "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}})
class TwoStem(ModelReplica):
    """Free tier and 2-stem requests, clean and enhance: never touches a GPU."""

    mode = "cpu_only"
    variants = ("2stem", "speech")


@serve.deployment(max_ongoing_requests=1, graceful_shutdown_timeout_s=10, ray_actor_options={"num_cpus": 1})
class FiveStem(ModelReplica):
    """5-stem requests: a GPU when the replica got one, else the CPU, and the response says which."""

    mode = "gpu_allowed"
    variants = ("5stem",)
    cpus_setting = "five_stem_cpus"
    size_setting = "five_stem_size"  # by device: the gpu size on a GPU (engine size="auto")
