"""The application builder: `import_path: serve_app.app:build_app` in a Serve config.

Resources are decided here, before deploying, because a replica that asks for a GPU on a
cluster without one waits forever in Ray (it never fails). `five_stem_device`: `gpu`
requests one GPU for FiveStem (autoscaling clusters, whose GPU nodes may not exist yet);
`cpu` requests none; `auto` looks at the running cluster's resources. A config file's
`ray_actor_options` for a deployment replaces the ones set here whole, so an override must
repeat `num_cpus` (and `num_gpus`).
"""

from __future__ import annotations

import logging

import ray
from ray.serve import Application

from .deployments import FiveStem, TwoStem
from .dispatcher import Dispatcher
from .ingress import Ingress
from .settings import Settings

log = logging.getLogger("ray.serve")


def five_stem_gpus(choice: str) -> int:
    if choice == "gpu":
        return 1
    if choice == "cpu":
        return 0
    # auto: the running cluster's resources (never import torch here: the driver would grow
    # by ~300 MiB, and the driver's own CUDA is not the cluster's)
    gpus = ray.cluster_resources().get("GPU", 0) if ray.is_initialized() else 0
    return 1 if gpus >= 1 else 0


def build_app(args: dict) -> Application:
    settings = Settings(**(args or {}))
    gpus = five_stem_gpus(settings.five_stem_device)
    log.info("FiveStem requests %d GPU (five_stem_device=%s)", gpus, settings.five_stem_device)
    conf = settings.model_dump()
    two = TwoStem.options(ray_actor_options={
        "num_cpus": settings.two_stem_cpus, "num_gpus": 0,
        "runtime_env": {"env_vars": {"CUDA_VISIBLE_DEVICES": ""}}}).bind(conf)
    five = FiveStem.options(ray_actor_options={"num_cpus": settings.five_stem_cpus, "num_gpus": gpus}).bind(conf)
    dispatcher = Dispatcher.bind({"two_stem": two, "five_stem": five},
                                 {"two_stem": settings.two_slots, "five_stem": settings.five_slots}, conf)
    return Ingress.bind(dispatcher, conf)
