"""The Ingress under faults and load, against the real application on a real local Ray
(issue 14, points 4 and 5).

An Ingress crash cannot answer the clients it was talking to (the proxy says a plain 500),
so what must hold is that nothing is lost with it: the jobs run on (their inputs lie in the
data folder, not in the dead process), and a client that retries with the same
Idempotency-Key gets the job it was charged for, never a second one. And large uploads
must not grow the Ingress by their size: they are spooled to disk and decoded from there.
"""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from ray_app import SETTLE_S, all_settled_once, new_key, ray_app, records, replica_actor, used, wait_for
from service_fixture import wav_bytes

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def app():
    yield from ray_app("ingress")


@pytest.fixture(scope="module")
def db(app):
    from entitlements import make_engine
    return make_engine(app[0].db_url)


def post(svc, key, data, idempotency_key, wait_s=50):
    """A waiting submission; a transport error is an answer too (the caller's connection broke)."""
    try:
        return svc.submit(key, data=data, stems=2, headers={"Idempotency-Key": idempotency_key,
                                                            "Prefer": f"wait={wait_s}"})
    except httpx.HTTPError as e:
        return e


def newest_job(svc, key):
    with svc.client(key) as c:
        jobs = c.get("/api/jobs").json()["jobs"]
    return jobs[0] if jobs else None


def test_an_ingress_crash_loses_no_job_and_a_retry_with_the_same_key_finds_it(app, db):
    import ray

    svc, _ = app
    key = new_key(db)
    # the running job: ~7 s of work (more on a loaded machine); the queued one waits for the
    # one TwoStem slot behind it
    requests = {"running": (wav_bytes(60.0, seed=1), "crash-running"), "queued": (wav_bytes(1.0, seed=2), "crash-queued")}
    answers, clients, ids = {}, {}, {}
    for name, (data, idem) in requests.items():
        clients[name] = threading.Thread(target=lambda n=name, d=data, i=idem: answers.__setitem__(n, post(svc, key, d, i)))
        clients[name].start()
        job = wait_for(lambda: (j := newest_job(svc, key)) and j["job_id"] not in ids.values() and j, 60)
        ids[name] = job["job_id"]
        if name == "running":
            wait_for(lambda: records(db, [ids["running"]])[0][0].progress > 0, 120)
    assert [j.status for j, _ in records(db, [ids["running"], ids["queued"]])] == ["running", "queued"]
    ray.kill(replica_actor("Ingress"), no_restart=True)
    killed = time.monotonic()
    for client in clients.values():
        client.join(SETTLE_S)
    # the dead Ingress could not answer: the proxy's 5xx or a broken connection, no job id
    for name, r in answers.items():
        assert isinstance(r, httpx.HTTPError) or r.status_code >= 500, (name, r.status_code, r.text)

    # the jobs go on without the Ingress: each ends within a minute, whoever answers its client
    ordered = [ids["running"], ids["queued"]]
    wait_for(lambda: all(j.status not in ("queued", "running") for j, _ in records(db, ordered)), SETTLE_S)
    assert time.monotonic() - killed < SETTLE_S

    # the remedy: the same request again, with the same Idempotency-Key, once Serve has a new
    # Ingress replica (until then the retry is itself a 5xx or a broken connection)
    def retried(name):
        r = post(svc, key, *requests[name], wait_s=0)
        return not isinstance(r, httpx.HTTPError) and r.status_code < 500 and r

    for name in requests:
        r = wait_for(lambda: retried(name), SETTLE_S, every=1.0)
        assert r.status_code == 200, r.text
        assert (r.json()["job_id"], r.json()["status"]) == (ids[name], "done"), (name, r.json())
        assert r.headers["Idempotent-Replayed"] == "true"

    rows = all_settled_once(svc, db, key, ordered)
    # the running job was finished by its own run; the queued one ran from its stored input
    # (it was failed as "the model replica failed" when its audio lived in the dead Ingress)
    assert [(j.status, j.attempts) for j, _ in rows] == [("done", None), ("done", None)], \
        [(j.status, j.attempts, j.error) for j, _ in rows]
    assert used(svc, key) == 2  # two jobs, two charges: the retries charged nothing
    assert not list((svc.data_dir / "inputs").iterdir())
