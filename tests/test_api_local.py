"""Back-pressure and the API's smaller fault answers (issue 14), over HTTP against the real
application in Serve's local testing mode (see local_service.py: real deployments, engines,
database and decoding; no Ray processes). A queue of depth 1 per priority level fills with
two jobs; 3 s chunks keep a long job running while the test submits behind it."""

from __future__ import annotations

import hashlib
import json
import threading
import time

import pytest
from sqlmodel import Session, select

from local_service import start_local_app
from service_fixture import STRIPE_SECRET, open_slow_upload, status_of, wav_bytes


@pytest.fixture(scope="module")
def svc():
    service, stop = start_local_app("local", queue_max_depth=1, chunk_seconds=3.0, overlap_seconds=0.5,
                                    retry_after_s=7, max_uploads_per_key=2, upload_rate_grace_s=3.0,
                                    upload_min_bytes_per_s=1000.0, upload_idle_timeout_s=5.0,
                                    allow_debug=True, shifts={"2stem": 2})
    yield service
    stop()


@pytest.fixture(scope="module")
def db(svc):
    from entitlements import make_engine
    return make_engine(svc.db_url)


@pytest.fixture
def user(db):
    from entitlements.accounts import create_user

    def make(plan):
        u, key = create_user(db, f"{plan}-{time.time_ns()}@local", plan)
        return u.id, key
    return make


def used(svc, key):
    with svc.client(key) as c:
        return c.get("/api/me").json()["capabilities"]["stem_split"]["used"]


def is_problem(r, status, slug=None):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["status"] == status and body["detail"]
    if slug:
        assert body["type"] == f"/problems/{slug}", body
    return body


def jobs_of(db, uid):
    from serve_app.jobs import Job
    with Session(db) as s:
        return s.exec(select(Job).where(Job.user_id == uid).order_by(Job.created_at)).all()


def usage_status(db, event_id):
    from entitlements.schema import UsageEvent
    with Session(db) as s:
        return s.get(UsageEvent, event_id).status


def wait_for(predicate, timeout=300.0, every=0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(predicate)


def test_full_queue_is_back_pressure_for_both_wait_modes(svc, db, user):
    vip_id, vip = user("vip")
    blocker = svc.submit(vip, seconds=120.0, stems=2, wait=False).json()["job_id"]  # the only TwoStem slot
    wait_for(lambda: jobs_of(db, vip_id)[0].status == "running")
    uid, free = user("free")
    queued = svc.submit(free, seconds=1.0, wait=False)
    assert queued.status_code == 202, queued.text  # the low level's one place
    with svc.client(free) as c:  # a status poll says where it waits
        assert c.get(f"/api/jobs/{queued.json()['job_id']}").json()["queue_position"] == 0
    for wait in (False, True):
        t0 = time.monotonic()
        r = svc.submit(free, seconds=1.0, wait=wait)
        refused_in = time.monotonic() - t0
        body = is_problem(r, 503, "queue-full")
        assert r.headers["Retry-After"] == "7" and body["refunded"] is True
        assert "low-priority queue is full" in body["detail"]
        assert refused_in < 30, f"wait={wait}: refused after {refused_in:.1f} s, not at once"
    jobs = jobs_of(db, uid)
    assert [j.status for j in jobs] == ["queued", "failed", "failed"]
    assert [usage_status(db, j.usage_event_id) for j in jobs[1:]] == ["released", "released"]
    assert used(svc, free) == 1  # only the queued job is charged
    with svc.client(free) as c:
        assert c.delete(f"/api/jobs/{queued.json()['job_id']}").json()["status"] == "cancelled"
    with svc.client(vip) as c:
        assert c.delete(f"/api/jobs/{blocker}").json()["status"] == "cancelled"
    assert used(svc, free) == 0


def test_a_job_runs_and_its_waiting_client_gets_it(svc, user):
    _, key = user("pro")
    r = svc.submit(key, seconds=1.0, stems=2)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    assert set(r.json()["stems"]) == {"vocals", "instrumental"}
    later = svc.submit(key, seconds=1.0, stems=2, wait=False)
    assert later.status_code == 202
    assert svc.wait_done(key, later.json()["job_id"], timeout=300)["status"] == "done"


def test_signed_malformed_stripe_events_are_400(svc):
    from entitlements.stripe_webhooks import sign
    with svc.client() as c:
        for body in (b"[1, 2]", json.dumps({"type": "invoice.paid", "created": 1}).encode()):
            r = c.post("/api/webhooks/stripe", content=body, headers={"Stripe-Signature": sign(body, STRIPE_SECRET)})
            is_problem(r, 400)


def test_a_one_frame_file_is_refused_and_costs_nothing(svc, user):
    _, key = user("pro")
    body = is_problem(svc.submit(key, data=wav_bytes(1 / 44100), stems=2), 422, "invalid-audio")
    assert body["code"] == "too_short" and used(svc, key) == 0


def test_idempotency_key_length_and_a_replay_in_progress(svc, db, user):
    from entitlements import authorize_and_consume
    from serve_app.ingress import fingerprint
    from serve_app.uploads import JobOptions

    uid, key = user("pro")
    is_problem(svc.submit(key, seconds=1.0, stems=2, headers={"Idempotency-Key": "k" * 256}), 422, "bad-request")
    assert used(svc, key) == 0
    # the first request of this key has been charged but has not written its job yet
    data = wav_bytes(1.0, seed=7)
    authorize_and_consume(db, "stem_split", user_id=uid, idempotency_key="first-in-flight",
                          fingerprint=fingerprint("separate", "2stem", JobOptions(stems=2), hashlib.sha256(data).digest()),
                          input_seconds=1.0, variant="2stem")
    r = svc.submit(key, data=data, stems=2, headers={"Idempotency-Key": "first-in-flight"})
    is_problem(r, 409, "idempotency-in-progress")
    assert r.headers["Retry-After"] == "1"
    assert jobs_of(db, uid) == [] and used(svc, key) == 1  # no second job on the one charge


def test_405_says_allow(svc):
    with svc.client() as c:
        r = c.post("/api/jobs/abc")
        is_problem(r, 405, "method-not-allowed")
        assert set(r.headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD", "DELETE"}
        assert set(c.put("/api/me").headers["Allow"].replace(" ", "").split(",")) == {"GET", "HEAD"}


def latencies(svc, key, seconds: float) -> tuple[float, float]:
    """The worst /healthz and the worst /api/me latency over `seconds` of polling."""
    worst_health = worst_me = 0.0
    with svc.client() as anyone, svc.client(key) as c:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            assert anyone.get("/healthz").status_code == 200
            t1 = time.monotonic()
            assert c.get("/api/me").status_code == 200
            worst_health, worst_me = max(worst_health, t1 - t0), max(worst_me, time.monotonic() - t1)
            time.sleep(0.2)
    return worst_health, worst_me


def wait_answered(socks, at_least: int, timeout: float) -> int:
    """Wait until `at_least` of the connections have a response to read; how many have."""
    import selectors

    with selectors.DefaultSelector() as sel:  # epoll: no limit on descriptor numbers
        for s in socks:
            sel.register(s, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        while True:
            readable = len(sel.select(timeout=0))
            if readable >= at_least or time.monotonic() > deadline:
                return readable
            time.sleep(0.2)


def test_slow_uploads_from_one_key_starve_nobody(svc, user):
    port = int(svc.url.rsplit(":", 1)[1])
    _, slow_key = user("free")
    _, other = user("pro")
    _, idle_me = latencies(svc, other, 3)  # what /api/me costs here with no uploads at all
    socks = [open_slow_upload(port, slow_key) for _ in range(300)]
    stop = threading.Event()

    def trickle():  # one byte a second on every connection still open
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.send(b"R")
                except OSError:
                    pass

    threading.Thread(target=trickle, daemon=True).start()
    try:
        # the refusals come first and at once (here all 300 requests share one starved process
        # with the server, so "at once" is measured from the burst, not per request) ...
        answered = wait_answered(socks, at_least=250, timeout=120)
        # ... then, while the admitted ones still trickle, nobody else waits behind them
        health, me = latencies(svc, other, 6)
        statuses = [status_of(s) for s in socks]
    finally:
        stop.set()
        for s in socks:
            s.close()
    # every one was answered: the key's uploads in progress (2 at a time; a cut one frees its
    # place for a later connection) were cut for their pace, the rest refused at once
    assert answered >= 250
    assert set(statuses) == {408, 429} and statuses.count(408) >= 2, statuses
    assert statuses.count(429) >= 250, statuses.count(429)
    assert health < 1.0, f"/healthz took {health:.2f} s behind the slow uploads"
    # /api/me reads the database: on a loaded machine it may take a while by itself, so it is
    # held to its own cost without uploads (the bug was a wait for the uploads' threads)
    assert me < max(1.0, 3 * idle_me), f"/api/me took {me:.2f} s behind the slow uploads ({idle_me:.2f} s idle)"
    assert used(svc, slow_key) == 0
    ok = svc.submit(slow_key, seconds=1.0)  # and the key's uploads are given back
    assert ok.status_code == 200, ok.text


def test_each_model_runs_the_passes_its_deployment_is_configured_for(svc, user):
    """`shifts` names the 2-stem model here: its jobs run two passes per chunk, the 5-stem
    model keeps its default of one and speech its default of two."""
    _, key = user("vip")
    ran = {}
    for task, fields in (("separate", {"stems": 2}), ("separate", {"stems": 5}), ("clean", {})):
        r = svc.submit(key, seconds=1.0, task=task, debug=True, **fields)
        assert r.status_code == 200, r.text
        meta = r.json()["metadata"]
        ran[meta["variant"]] = meta["shifts"]
    assert ran == {"2stem": 2, "5stem": 1, "speech": 2}
