"""Who settles a job (issue 14), on real databases (SQLite and PostgreSQL) without Ray: the
rules that the integration tests in test_faults.py exercise end to end."""

from __future__ import annotations

import asyncio
import threading
import types
import uuid

import pytest
from sqlmodel import Session

from entitlements import authorize_and_consume
from entitlements.accounts import create_user
from entitlements.schema import UsageEvent
from serve_app.jobs import Job, JobStore


@pytest.fixture
def store(db, tmp_path):
    return JobStore(db, tmp_path / "results")


def new_job(db, store, ttl_s=3600) -> Job:
    user, key = create_user(db, f"{uuid.uuid4().hex}@x", "pro")
    decision = authorize_and_consume(db, "stem_split", api_key=key, ttl_s=ttl_s)
    return store.create(Job(id=uuid.uuid4().hex, user_id=user.id, task="separate", variant="2stem",
                            model="two_stem", plan="pro", priority="normal", input_seconds=1.0,
                            usage_event_id=decision.event_id))


def usage(db, job: Job) -> UsageEvent:
    with Session(db) as s:
        return s.get(UsageEvent, job.usage_event_id)


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
