"""Application arguments (the `args:` of a Serve config), validated once and handed to every
deployment as a plain dict."""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # storage: DATABASE_URL (or this) selects PostgreSQL; otherwise SQLite in the data folder
    database_url: str | None = None
    # a cluster: refuse to start without PostgreSQL and a data folder named for every node
    require_shared_storage: bool = False
    data_dir: str = Field(default_factory=lambda: os.environ.get("LOCOSERVE_DATA_DIR", "data"))
    seed_demo_users: bool = False
    allow_debug: bool = False

    # models
    random_weights: bool = False  # tests and benchmarks only: every response then says so
    model_overrides: dict = Field(default_factory=dict)  # network fields, e.g. tiny test models
    chunk_seconds: float = 18.0
    overlap_seconds: float = 1.75
    five_stem_device: Literal["auto", "gpu", "cpu"] = "auto"
    # FiveStem's network: "auto" is the `gpu` size (models/checkpoints/5stem-gpu.pt) on a GPU and
    # the `cpu` size on a CPU; a GPU without a gpu-size checkpoint runs the cpu-size one and says so
    five_stem_size: Literal["auto", "gpu", "cpu"] = "auto"
    # chunks per forward; None: 1 on a CPU, on a GPU as many as its free memory holds, ≤ max_batch
    batch_size: int | None = Field(default=None, ge=1)
    max_batch: int = Field(default=8, ge=1)
    two_stem_cpus: float = 1.0
    five_stem_cpus: float = 1.0
    # passes per chunk at sub-hop offsets, averaged (models/shifts.py), per model: N passes buy
    # better stems for N times the compute; a model not named keeps its default (speech 2, music 1)
    shifts: dict[Literal["2stem", "5stem", "speech"], Annotated[int, Field(ge=1)]] = Field(default_factory=dict)

    # dispatching: slots = replicas × max_ongoing_requests of each model deployment
    two_slots: int = 1
    five_slots: int = 1
    queue_max_depth: int = 100  # per priority level and model
    aging_s: float = 120.0  # a job waiting this long rises one priority level
    retry_after_s: int = 30
    # a dispatcher queues the `queued` records it does not hold and looks for runs whose model
    # replica is gone this often (serve_app/recovery.py); such a run is retried this many times
    recovery_s: float = Field(default=2.0, gt=0)
    run_retries: int = Field(default=1, ge=0)

    # requests and results
    max_upload_mb: float = 200.0
    max_input_seconds: float = 2 * 3600  # the service's ceiling; plans set lower ones
    min_input_seconds: float = Field(default=0.1, ge=0)  # shorter decoded audio is refused (422), uncharged
    # ingress protection (serve_app/admission.py, uploads.py): uploads in progress per API key and
    # in all (the Ingress takes 1000 requests at once: the rest stay free for health and polls),
    # bytes of audio_url downloads in memory (files are spooled to disk), and how slowly a body
    # may arrive (408)
    max_uploads_per_key: int = Field(default=4, ge=1)
    max_uploads: int = Field(default=64, ge=1, le=500)
    upload_memory_mb: float = Field(default=3072.0, gt=0)
    upload_idle_timeout_s: float = Field(default=30.0, gt=0)
    upload_min_bytes_per_s: float = Field(default=16384.0, ge=0)
    upload_rate_grace_s: float = Field(default=10.0, ge=0)
    results_ttl_s: int = 24 * 3600
    # a submission waits at most this long for its job (then 202 and Location; serve_app/waiting.py):
    # under the 60 s time-out common in proxies, so that a plain request always learns its job
    max_wait_s: float = Field(default=50.0, ge=0)
    link_ttl_s: int = Field(default=3600, ge=60)
    cors_origins: list[str] = Field(default_factory=list)  # e.g. ["https://app.example.com"]; none: no CORS
    # job webhooks (serve_app/webhooks.py): plain http and loopback/private receivers only where
    # this allows them (local tests and serve_config.yaml, never a cluster); the first retry
    # after this, doubling, at most an hour apart, for the window
    webhook_allow_private: bool = False
    webhook_first_retry_s: float = Field(default=10.0, gt=0)
    webhook_retry_window_s: float = Field(default=24 * 3600, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    # audio by URL (`audio_url`): the same size cap as uploads, a time-out for the whole download,
    # redirects followed (each checked); loopback/private hosts and plain http only where allowed
    url_fetch_timeout_s: float = Field(default=60.0, gt=0)
    url_max_redirects: int = Field(default=3, ge=0)
    url_allow_private: bool = False  # signed stem links (serve_app/links.py) expire after this
    # A job's usage reservation lapses after this long without renewal: a running job renews it
    # from its progress (every quarter of it) and the dispatcher for the calls it has in flight,
    # so one chunk's computation must take less than this. Lapsed → the sweeper (every
    # housekeeping_s) fails the job and refunds it.
    reservation_ttl_s: int = Field(default=2 * 3600, ge=10)
    housekeeping_s: float = Field(default=60.0, gt=0)
    stripe_webhook_secrets: list[str] = Field(default_factory=lambda: _env_list("STRIPE_WEBHOOK_SECRETS"))

    @model_validator(mode="after")
    def _renewal_fits_the_ttl(self) -> "Settings":
        # the sweeper looks once per housekeeping round: a TTL under two rounds is finer than
        # it can tell apart (and the dispatcher's renewals of in-flight jobs run on that round)
        if self.housekeeping_s * 2 > self.reservation_ttl_s:
            raise ValueError(f"reservation_ttl_s ({self.reservation_ttl_s}) must be at least twice housekeeping_s "
                             f"({self.housekeeping_s}), or running jobs' reservations lapse between renewals")
        return self

    @model_validator(mode="after")
    def _one_download_fits_the_budget(self) -> "Settings":
        # an audio_url download is held in memory until spooled: the largest allowed must fit,
        # or it is refused forever (uploaded files are spooled to disk as they arrive)
        if self.upload_memory_mb < self.max_upload_mb:
            raise ValueError(f"upload_memory_mb ({self.upload_memory_mb:g}) must hold one download of "
                             f"max_upload_mb ({self.max_upload_mb:g})")
        return self

    @model_validator(mode="after")
    def _resolve_storage(self) -> "Settings":
        # Resolved once, where the app is built: replicas run in other working directories.
        # A DATABASE_URL in the environment is left to each replica to read, so that a
        # password never ends up in the application's (visible) config.
        if self.require_shared_storage:
            missing = []
            if not (self.database_url or os.environ.get("DATABASE_URL", "")).startswith("postgresql"):
                missing.append("DATABASE_URL (a PostgreSQL URL every node reaches)")
            if "data_dir" not in self.model_fields_set and not os.environ.get("LOCOSERVE_DATA_DIR"):
                missing.append("LOCOSERVE_DATA_DIR (a path to storage every node shares)")
            if missing:
                raise ValueError(f"this config needs {' and '.join(missing)} in the nodes' environment; "
                                 f"without them each node would keep its own jobs and files")
        self.data_dir = str(Path(self.data_dir).resolve())
        if self.database_url is None and not os.environ.get("DATABASE_URL"):
            self.database_url = f"sqlite:///{Path(self.data_dir) / 'locoserve.db'}"
        return self

    @property
    def results_dir(self) -> str:
        return os.path.join(self.data_dir, "results")
