"""Prometheus metrics (exported by Ray's metrics agent; see Ray Serve's monitoring guide)."""

from __future__ import annotations

from ray.serve import metrics

WAIT_BUCKETS = [0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]
RUN_BUCKETS = [0.1, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800]


class Metrics:
    def __init__(self):
        self.queue_depth = metrics.Gauge("locoserve_queue_depth", "Jobs waiting, per model and priority",
                                         tag_keys=("model", "priority"))
        self.queue_wait = metrics.Histogram("locoserve_queue_wait_seconds", "Time from queued to forwarded",
                                            boundaries=WAIT_BUCKETS, tag_keys=("model", "priority"))
        self.run_time = metrics.Histogram("locoserve_run_seconds", "Time a model replica spent on a job",
                                          boundaries=RUN_BUCKETS, tag_keys=("model",))
        self.outcomes = metrics.Counter("locoserve_jobs_total", "Jobs by outcome", tag_keys=("model", "outcome"))
        self.fallbacks = metrics.Counter("locoserve_cpu_fallbacks_total", "Jobs that fell back from GPU to CPU",
                                         tag_keys=("model",))


class IngressMetrics:
    def __init__(self):
        self.denials = metrics.Counter("locoserve_denials_total", "Requests refused, by reason",
                                       tag_keys=("reason",))
