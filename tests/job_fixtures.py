"""A charged job row, as the Ingress creates one, for tests of what happens to it later."""

from __future__ import annotations

import uuid

from sqlmodel import Session

from entitlements import authorize_and_consume
from entitlements.accounts import create_user
from entitlements.schema import UsageEvent
from serve_app.jobs import Job, JobStore


def new_job(db, store: JobStore, ttl_s: int = 3600) -> Job:
    user, key = create_user(db, f"{uuid.uuid4().hex}@x", "pro")
    decision = authorize_and_consume(db, "stem_split", api_key=key, ttl_s=ttl_s)
    return store.create(Job(id=uuid.uuid4().hex, user_id=user.id, task="separate", variant="2stem",
                            model="two_stem", plan="pro", priority="normal", input_seconds=1.0,
                            usage_event_id=decision.event_id))


def usage(db, job: Job) -> UsageEvent:
    with Session(db) as s:
        return s.get(UsageEvent, job.usage_event_id)
