"""The real application on a real local Ray, for tests that kill its processes (the Dispatcher,
the Ingress) or measure them, and the checks they share: every job ended, each done one
charged once.

Each replica asks for half a CPU or none, so the application fits a 2-core machine; 2 s
chunks make a long job report progress (and be seen running) early.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from sqlmodel import Session, select

from service_fixture import Service, free_port

SETTLE_S = 60  # issue 14's bound: every job ends within a minute of the fault


def ray_app(prefix: str, **overrides):
    """Generator for a module fixture: yields (Service, run) where run() deploys the app again;
    Ray is shut down after."""
    import ray
    from ray import serve

    from serve_app.app import build_app

    root = Path(tempfile.mkdtemp(prefix=f"locoserve-{prefix}-"))
    ray_dir, metrics_port = tempfile.mkdtemp(prefix="ray"), free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=ray_dir,
             _metrics_export_port=metrics_port)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    conf = dict(random_weights=True, two_stem_cpus=0.5, five_stem_cpus=0.5, five_stem_device="cpu",
                housekeeping_s=1.0, recovery_s=1.0, chunk_seconds=2.0, overlap_seconds=0.25,
                data_dir=str(root), database_url=f"sqlite:///{root / 'db.sqlite'}", seed_demo_users=True) | overrides

    def run():
        serve.run(build_app(conf), name="main", route_prefix="/")

    run()
    keys = json.loads((root / "demo-keys.json").read_text())
    service = Service(f"http://127.0.0.1:{port}", root, conf["database_url"], keys)
    service.ray_dir, service.conf, service.metrics_port = Path(ray_dir), conf, metrics_port
    try:
        yield service, run
    finally:
        ray.shutdown()


def new_key(db, plan="pro"):
    from entitlements.accounts import create_user
    return create_user(db, f"{plan}-{time.time_ns()}@faults", plan)[1]


def records(db, ids):
    """[(job, its usage event)] in the order of `ids`."""
    from entitlements.schema import UsageEvent
    from serve_app.jobs import Job

    with Session(db) as s:
        jobs = {j.id: j for j in s.exec(select(Job).where(Job.id.in_(ids))).all()}
        usage = {e.id: e for e in s.exec(select(UsageEvent).where(
            UsageEvent.id.in_([j.usage_event_id for j in jobs.values()]))).all()}
        return [(jobs[i], usage[jobs[i].usage_event_id]) for i in ids]


def wait_for(predicate, timeout, every=0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(every)
    raise TimeoutError(predicate)


def submit(svc, key, seconds):
    r = svc.submit(key, seconds=seconds, stems=2, wait=False)
    assert r.status_code == 202, r.text
    return r.json()["job_id"]


def used(svc, key):
    with svc.client(key) as c:
        return c.get("/api/me").json()["capabilities"]["stem_split"]["used"]


def all_settled_once(svc, db, key, ids):
    """Every job ended; done ones charged, the others refunded; the quota counts each done job once."""
    rows = records(db, ids)
    if any(j.status in ("queued", "running") for j, _ in rows):
        return False
    for job, event in rows:
        assert event.status == ("committed" if job.status == "done" else "released"), (job, event)
        assert job.status in ("done", "failed"), job
    assert used(svc, key) == sum(j.status == "done" for j, _ in rows)
    return rows


def replica_actor(deployment: str):
    """The one replica actor of `deployment` in the app `main` (Serve names it
    SERVE_REPLICA::main#<deployment>#<id>)."""
    import ray

    names = [a for a in ray.util.list_named_actors(all_namespaces=True) if f"main#{deployment}#" in a["name"]]
    assert len(names) == 1, names
    return ray.get_actor(names[0]["name"], namespace=names[0]["namespace"])
