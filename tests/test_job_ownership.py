"""Who settles a job (issue 14), on real databases (SQLite and PostgreSQL) without Ray: the
rules that the integration tests in test_faults.py exercise end to end."""

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



def test_follow_record_fails_a_lost_queued_job_but_waits_for_a_running_one(db, store):
    from serve_app.outcome import follow_record

    lost = new_job(db, store)
    ended = asyncio.run(follow_record(store, lost.id, poll_s=0.01))
    assert ended.status == "failed" and "refunded" in ended.error
    assert usage(db, lost).status == "released"

    running = new_job(db, store)
    assert store.start(running.id, "cpu", False, None)
    finisher = threading.Timer(0.3, lambda: store.finish(running.id, "done", stems=["vocals"]))
    finisher.start()
    ended = asyncio.run(follow_record(store, running.id, poll_s=0.02))
    assert ended.status == "done" and usage(db, running).status == "committed"  # the run's outcome stands


def test_only_a_verified_replica_death_settles_a_started_job_from_the_dispatcher(db, store):
    from ray.exceptions import ActorDiedError

    from serve_app.dispatcher import Dispatcher

    call_failed = Dispatcher.func_or_class._call_failed
    this = types.SimpleNamespace(jobs=store)

    started = new_job(db, store)
    store.start(started.id, "cpu", False, None)
    assert call_failed(this, started.id, "two_stem", TimeoutError("no answer")) == "running-elsewhere"
    assert store.get(started.id).status == "running" and usage(db, started).status == "reserved"

    never_started = new_job(db, store)
    assert call_failed(this, never_started.id, "two_stem", TimeoutError("no answer")) == "failed"
    assert usage(db, never_started).status == "released"

    assert call_failed(this, started.id, "two_stem", ActorDiedError()) == "failed"
    assert store.get(started.id).status == "failed" and usage(db, started).status == "released"
