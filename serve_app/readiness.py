"""Whether the model deployments can take jobs, as Serve's controller sees them.

A model replica that cannot start (no checkpoint, a bad config) leaves its deployment
DEPLOY_FAILED or UNHEALTHY while the ingress stays up: without this check a job would be
charged and then wait forever for a replica that never comes. The ingress asks before
charging and answers 503 instead; `/readyz` reports the same view. The controller is asked
at most once per `ttl_s`, so a burst of requests costs one call.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from ray import serve

# Serve's deployment states in which a queued job will eventually run: HEALTHY, and the
# transitions of a deployment that is starting or scaling. LOCAL: Serve's local testing mode
# (tests), which has no controller to ask and constructs every deployment before serving.
SERVING = {"HEALTHY", "UPDATING", "UPSCALING", "DOWNSCALING", "LOCAL"}
# /readyz is stricter: UPDATING is also a deployment whose first replicas are still starting
# (4-7 s before they take jobs), which a load balancer should not yet send traffic to
READY = SERVING - {"UPDATING"}
DEPLOYMENTS = {"two_stem": "TwoStem", "five_stem": "FiveStem"}


@dataclass
class ModelState:
    deployment: str
    status: str
    message: str

    @property
    def serving(self) -> bool:
        return self.status in SERVING

    @property
    def ready(self) -> bool:
        return self.status in READY


class Readiness:
    def __init__(self, app_name: str | None, ttl_s: float = 2.0):
        """`app_name` None: local testing mode (asking serve.status() there would start Ray)."""
        self.app_name, self.ttl_s = app_name, ttl_s
        self._checked, self._states = 0.0, {}

    def states(self) -> dict[str, ModelState]:
        """Blocking (a controller call): run it in a thread."""
        if self.app_name is None:
            return {model: ModelState(name, "LOCAL", "local testing mode") for model, name in DEPLOYMENTS.items()}
        if time.monotonic() - self._checked > self.ttl_s:
            app = serve.status().applications.get(self.app_name)
            deployments = app.deployments if app else {}
            self._states = {
                model: ModelState(name, str(getattr(d.status, "value", d.status)), d.message or "")
                if (d := deployments.get(name)) else ModelState(name, "MISSING", "not deployed")
                for model, name in DEPLOYMENTS.items()}
            self._checked = time.monotonic()
        return self._states
