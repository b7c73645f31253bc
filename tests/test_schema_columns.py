"""A database made before a nullable column existed gets it in place, on SQLite and PostgreSQL."""

from sqlalchemy import inspect
from sqlmodel import Session

from entitlements.accounts import create_user
from entitlements.db import init_db
from serve_app.jobs import Job


def test_missing_nullable_job_columns_are_added(db):
    with db.begin() as conn:  # as a database written before bitrate and source_name existed
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN bitrate")
        conn.exec_driver_sql("ALTER TABLE jobs DROP COLUMN source_name")
    assert "bitrate" not in {c["name"] for c in inspect(db).get_columns("jobs")}
    init_db(db)
    init_db(db)  # idempotent
    assert {"bitrate", "source_name"} <= {c["name"] for c in inspect(db).get_columns("jobs")}
    user, _ = create_user(db, "old@db", "pro")
    with Session(db) as s, s.begin():
        s.add(Job(id="j1", user_id=user.id, task="separate", variant="2stem", model="two_stem", plan="pro",
                  priority="normal", input_seconds=1.0, usage_event_id="e1", format="mp3", bitrate=192,
                  source_name="Song"))
    with Session(db) as s:
        job = s.get(Job, "j1")
        assert (job.bitrate, job.source_name) == (192, "Song")
