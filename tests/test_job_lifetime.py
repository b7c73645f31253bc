"""A job's reservation lives as long as its run reports progress; the settings that rule it
are checked at start; the database and results are owner-only; the OpenAPI document says
401 where a key is needed (issue 14). Real databases (SQLite and PostgreSQL), no Ray."""

from __future__ import annotations

import os
import stat
import time
from datetime import timedelta

import pytest
from pydantic import ValidationError

from entitlements import sweep
from entitlements.schema import utcnow
from serve_app.jobs import JobStore

from job_fixtures import new_job, usage


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def store(db, tmp_path):
    return JobStore(db, tmp_path / "results")



def test_a_running_job_keeps_its_reservation_from_its_progress(db, store):
    from serve_app.deployments import Keepalive

    job = new_job(db, store, ttl_s=10)
    keepalive = Keepalive(db, job.usage_event_id, 10)
    keepalive.renew(now=0.0)
    first = usage(db, job).expires_at
    keepalive.maybe_renew(1.0)  # under a quarter of the TTL: no write
    assert usage(db, job).expires_at == first
    time.sleep(0.05)
    keepalive.maybe_renew(2.5)
    assert usage(db, job).expires_at > first
    # the sweeper takes it only once renewals stop for a whole TTL
    assert sweep(db, now=utcnow() + timedelta(seconds=5)) == 0
    assert sweep(db, now=utcnow() + timedelta(seconds=11)) == 1
    assert store.fail_orphans() == 1 and store.get(job.id).status == "failed"


def test_a_job_ends_with_its_charge_in_one_transaction(db, store, monkeypatch):
    """Ended apart, a reader found a done job whose charge was still reserved (the TTL test, under
    load), and a crash between the two would have left it so until the sweeper refunded it."""
    import serve_app.jobs as jobs

    job = new_job(db, store)

    def lost_connection(*args, **kwargs):
        raise RuntimeError("connection lost while settling")

    monkeypatch.setattr(jobs, "settle_in", lost_connection)
    with pytest.raises(RuntimeError):
        store.finish(job.id, "done")
    assert (store.get(job.id).status, usage(db, job).status) == ("queued", "reserved")
    monkeypatch.undo()
    assert store.finish(job.id, "done")
    assert (store.get(job.id).status, usage(db, job).status) == ("done", "committed")
    other = new_job(db, store)
    assert store.finish(other.id, "failed", refund_reason="boom")
    assert (store.get(other.id).status, usage(db, other).status) == ("failed", "released")


@pytest.mark.parametrize("values", [dict(reservation_ttl_s=5), dict(reservation_ttl_s=100, housekeeping_s=60),
                                    dict(housekeeping_s=0), dict(min_input_seconds=-1),
                                    dict(max_upload_mb=200, upload_memory_mb=100)])
def test_settings_refuse_a_ttl_that_renewals_cannot_keep(values, tmp_path):
    from serve_app.settings import Settings

    with pytest.raises(ValidationError):
        Settings(data_dir=str(tmp_path), **values)
    assert Settings(data_dir=str(tmp_path), reservation_ttl_s=10, housekeeping_s=1).reservation_ttl_s == 10


def test_sqlite_file_and_results_are_owner_only(tmp_path):
    from entitlements import open_database

    engine = open_database(f"sqlite:///{tmp_path / 'data' / 'locoserve.db'}")
    assert mode(tmp_path / "data" / "locoserve.db") == 0o600
    assert mode(tmp_path / "data" / "locoserve.db-wal") == 0o600  # SQLite copies the file's mode
    old = tmp_path / "data" / "results"
    old.mkdir(mode=0o755)
    os.chmod(old, 0o755)  # as an older version left it
    JobStore(engine, old)
    assert mode(old) == 0o700


def test_openapi_lists_401_wherever_a_key_is_needed():
    from serve_app.openapi import openapi

    for path, methods in openapi()["paths"].items():
        for op in methods.values():
            if op.get("security"):
                assert "401" in op["responses"], (path, op["summary"])


def test_the_cluster_config_refuses_to_start_without_shared_storage(tmp_path, monkeypatch):
    from pathlib import Path

    import yaml

    from serve_app.settings import Settings

    args = yaml.safe_load((Path(__file__).parents[1] / "configs" / "cluster.yaml").read_text())["applications"][0]["args"]
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("LOCOSERVE_DATA_DIR", raising=False)
    with pytest.raises(ValidationError, match="DATABASE_URL .* and LOCOSERVE_DATA_DIR"):
        Settings(**args)
    monkeypatch.setenv("LOCOSERVE_DATA_DIR", str(tmp_path))
    with pytest.raises(ValidationError) as e:
        Settings(**args)
    assert "DATABASE_URL" in str(e.value) and "LOCOSERVE_DATA_DIR" not in str(e.value)
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/locoserve")
    ok = Settings(**args)
    assert ok.data_dir == str(tmp_path) and ok.database_url is None  # read by each replica, never in the config
    assert Settings(**Settings(**args).model_dump()).data_dir == str(tmp_path)  # as the replicas get it


def test_readyz_waits_out_updating_while_jobs_are_still_accepted():
    from serve_app.readiness import ModelState

    for status, serving, ready in (("HEALTHY", True, True), ("UPDATING", True, False), ("UPSCALING", True, True),
                                   ("DEPLOY_FAILED", False, False), ("UNHEALTHY", False, False)):
        state = ModelState("TwoStem", status, "")
        assert (state.serving, state.ready) == (serving, ready), status
