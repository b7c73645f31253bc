"""Who settles a job (issue 14), on real databases (SQLite and PostgreSQL) without Ray: the
rules that the integration tests in test_dispatcher_faults.py exercise end to end."""

from __future__ import annotations

import asyncio
import threading
import types

import pytest

from serve_app.jobs import JobStore

from job_fixtures import new_job, usage


@pytest.fixture
def store(db, tmp_path):
    return JobStore(db, tmp_path / "results")



def test_follow_record_leaves_a_queued_job_to_the_next_dispatcher_and_reports_its_end(db, store):
    from serve_app.outcome import follow_record

    queued = new_job(db, store)  # its dispatcher is gone: the next one queues it from the record
    finisher = threading.Timer(0.3, lambda: (store.start(queued.id, "cpu", False, None),
                                             store.finish(queued.id, "done", stems=["vocals"])))
    finisher.start()
    ended = asyncio.run(follow_record(store, queued.id, poll_s=0.01))
    finisher.join()  # the record ends first; its usage is settled just after, in its own transaction
    assert ended.status == "done" and usage(db, queued).status == "committed"

    running = new_job(db, store)
    assert store.start(running.id, "cpu", False, None)
    finisher = threading.Timer(0.3, lambda: store.finish(running.id, "done", stems=["vocals"]))
    finisher.start()
    ended = asyncio.run(follow_record(store, running.id, poll_s=0.02))
    finisher.join()
    assert ended.status == "done" and usage(db, running).status == "committed"  # the run's outcome stands


def test_only_a_verified_replica_death_settles_a_started_job_from_the_dispatcher(db, store):
    from ray.exceptions import ActorDiedError

    from serve_app.dispatcher import Dispatcher

    call_failed = Dispatcher.func_or_class._call_failed
    this = types.SimpleNamespace(jobs=store, s=types.SimpleNamespace(run_retries=1))

    started = new_job(db, store)
    store.save_input(started.id, b"the upload")
    store.start(started.id, "cpu", False, None, replica="SERVE_REPLICA::a#TwoStem#1")
    assert call_failed(this, started.id, "two_stem", TimeoutError("no answer")) == "running-elsewhere"
    assert store.get(started.id).status == "running" and usage(db, started).status == "reserved"

    never_started = new_job(db, store)
    assert call_failed(this, never_started.id, "two_stem", TimeoutError("no answer")) == "failed"
    assert usage(db, never_started).status == "released"

    # a verified death: retried once from the stored input, still charged once ...
    assert call_failed(this, started.id, "two_stem", ActorDiedError()) == "requeued"
    again = store.get(started.id)
    assert (again.status, again.attempts, again.replica) == ("queued", 1, None)
    assert usage(db, started).status == "reserved"
    # ... and failed and refunded when its second run is lost too
    store.start(started.id, "cpu", False, None, replica="SERVE_REPLICA::a#TwoStem#2")
    assert call_failed(this, started.id, "two_stem", ActorDiedError()) == "failed"
    assert store.get(started.id).status == "failed" and usage(db, started).status == "released"
    assert not store.input_path(started.id).exists()  # an ended job's input is deleted


def test_a_lost_run_is_settled_once_even_by_two_dispatchers(db, store):
    from serve_app.recovery import settle_lost_run

    job = new_job(db, store)
    store.save_input(job.id, b"x")
    store.start(job.id, "cpu", False, None, replica="SERVE_REPLICA::a#TwoStem#1")
    seen = store.get(job.id)  # both read the same running record
    assert settle_lost_run(store, seen, retries=1) == "requeued"
    assert settle_lost_run(store, seen, retries=1) is None  # the record moved on: nothing decided
    store.start(job.id, "cpu", False, None, replica="SERVE_REPLICA::a#TwoStem#2")
    store.finish(job.id, "done", stems=["vocals"])  # its second run ended it after all
    assert settle_lost_run(store, store.get(job.id), retries=1) is None
    assert usage(db, job).status == "committed"


def test_without_retries_or_input_a_lost_run_is_refunded(db, store):
    from serve_app.recovery import settle_lost_run

    for retries, stored in ((0, True), (1, False)):
        job = new_job(db, store)
        if stored:
            store.save_input(job.id, b"x")
        store.start(job.id, "cpu", False, None, replica="r")
        assert settle_lost_run(store, store.get(job.id), retries) == "failed"
        assert usage(db, job).status == "released" and "refunded" in store.get(job.id).error


def test_inputs_are_owner_only_and_orphans_expire(db, store):
    import os
    import stat

    job = new_job(db, store)
    path = store.save_input(job.id, b"abc")
    assert path.read_bytes() == b"abc" and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.inputs_dir).st_mode) == 0o700
    orphan = store.save_input("no-such-job", b"x")
    assert store.expire_inputs(grace_s=0) == 1  # the active job's input stays
    assert path.exists() and not orphan.exists()
