"""Job webhooks (issue 12, point 2) on real databases (SQLite and PostgreSQL) with a real HTTP
receiver on 127.0.0.1: the event recorded with the job's end, signed delivery, retries with
back-off, giving up after the window, and the address rules. Through the whole application
in test_service.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import yaml
from sqlmodel import Session, select

from conftest import PLANS
from job_fixtures import new_job, usage
from serve_app.jobs import JobStore
from serve_app.outbound import Refused, check_resolved, check_url, connect
from serve_app.webhooks import Deliverer, WebhookDelivery, secret_for, verify


class Receiver:
    """A real HTTP server that answers with the given codes in turn (then 200) and keeps what came."""

    def __init__(self, codes=()):
        self.codes, self.got = list(codes), []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body, time.monotonic()))
                self.send_response(outer.codes.pop(0) if outer.codes else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hooks/locoserve?src=test"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def store(db, tmp_path):
    return JobStore(db, tmp_path / "results")


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def deliveries(db, job_id):
    with Session(db) as s:
        return s.exec(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)).all()


def with_webhook(db, store, url):
    job = new_job(db, store)
    with Session(db) as s, s.begin():
        s.get(type(job), job.id).webhook = url
    return store.get(job.id)


def drain(deliverer, db, job_id, until, timeout=20.0):
    """Run delivery rounds, as the Dispatcher does, until `until(delivery)`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        asyncio.run(deliverer.round())
        rows = deliveries(db, job_id)
        if rows and until(rows[0]):
            return rows[0]
        time.sleep(0.05)
    raise TimeoutError(deliveries(db, job_id))


def test_the_end_of_a_job_is_delivered_signed_and_retried_until_it_is_taken(db, store):
    receiver = Receiver(codes=[500, 503])
    try:
        job = with_webhook(db, store, receiver.url)
        store.start(job.id, "cpu", False, None)
        assert not deliveries(db, job.id)  # nothing before the job ends
        store.finish(job.id, "done", stems=["vocals", "instrumental"])
        (event,) = deliveries(db, job.id)  # recorded with the end, in its transaction
        assert event.type == "job.done" and event.status == "pending"
        deliverer = Deliverer(db, allow_private=True, first_retry_s=0.3, window_s=3600, timeout_s=5)
        done = drain(deliverer, db, job.id, lambda d: d.status != "pending")
        assert done.status == "delivered" and [a["status_code"] for a in done.attempts] == [500, 503, 200]
        assert [a["error"] for a in done.attempts] == ["answered 500", "answered 503", None]
        secret = secret_for(db, job.user_id)
        bodies = {body for _, body, _ in receiver.got}
        assert len(bodies) == 1  # every attempt sends the same event
        for headers, body, _ in receiver.got:
            assert headers["Locoserve-Event-Id"] == event.id and headers["Content-Type"] == "application/json"
            assert verify(secret, body, headers["Locoserve-Signature"])
            assert not verify("whsec_other", body, headers["Locoserve-Signature"])
            assert not verify(secret, body + b" ", headers["Locoserve-Signature"])
        sent = json.loads(bodies.pop())
        assert sent["id"] == event.id and sent["type"] == "job.done"
        assert sent["job"]["job_id"] == job.id and sent["job"]["status"] == "done"
        assert set(sent["job"]["stems"]) == {"vocals", "instrumental"}
        gaps = [b[2] - a[2] for a, b in zip(receiver.got, receiver.got[1:])]
        assert gaps[0] >= 0.25 and gaps[1] >= 0.55  # 0.3 s, then doubled
        stale = receiver.got[0][0]["Locoserve-Signature"]
        assert not verify(secret, receiver.got[0][1], stale, now=time.time() + 600)  # too old a t
    finally:
        receiver.close()


def test_every_end_has_an_event_and_a_job_without_a_webhook_has_none(db, store, receiver):
    for status in ("failed", "cancelled"):
        job = with_webhook(db, store, receiver.url)
        store.finish(job.id, status, error="x", refund_reason="test")
        assert [d.type for d in deliveries(db, job.id)] == [f"job.{status}"]
        assert usage(db, job).status == "released"
    from datetime import timedelta

    from entitlements import sweep
    from entitlements.schema import utcnow

    swept = with_webhook(db, store, receiver.url)  # its worker stopped renewing: ended by the sweeper
    sweep(db, now=utcnow() + timedelta(hours=2))
    assert store.fail_orphans() >= 1
    assert [d.type for d in deliveries(db, swept.id)] == ["job.failed"]
    assert store.get(swept.id).status == "failed" and usage(db, swept).status == "released"
    plain = new_job(db, store)
    store.finish(plain.id, "done")
    assert not deliveries(db, plain.id)
    job = with_webhook(db, store, receiver.url)
    store.finish(job.id, "done")
    assert not store.finish(job.id, "failed")  # a second end is refused: still one event
    assert len(deliveries(db, job.id)) == 1


def test_a_delivery_gives_up_after_its_window_and_refused_addresses_never_connect(db, store, receiver):
    job = with_webhook(db, store, receiver.url)
    store.finish(job.id, "done")
    strict = Deliverer(db, allow_private=False, first_retry_s=0.2, window_s=0.5, timeout_s=5)
    failed = drain(strict, db, job.id, lambda d: d.status != "pending")
    assert failed.status == "failed" and all(a["error"].startswith("refused") for a in failed.attempts)
    assert not receiver.got  # the loopback receiver was never reached


def test_secrets_per_user_and_rotation(db, store):
    a, b = new_job(db, store), new_job(db, store)
    first = secret_for(db, a.user_id)
    assert first.startswith("whsec_") and secret_for(db, a.user_id) == first
    assert secret_for(db, b.user_id) != first
    assert secret_for(db, a.user_id, rotate=True) not in (first, secret_for(db, b.user_id))


def test_the_admin_cli_shows_and_rotates_a_users_secret(tmp_path):
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))

    def cli(*args):
        env = {"LOCOSERVE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
               "LOCOSERVE_PLANS": str(tmp_path / "plans.yaml")}
        return subprocess.run([sys.executable, "-m", "serve_app.cli", *args], capture_output=True, text=True,
                              env=env)

    assert cli("db", "init").returncode == 0
    assert cli("users", "create", "hook@x", "--plan", "pro").returncode == 0
    shown = cli("keys", "webhook-secret", "hook@x")
    assert shown.returncode == 0 and shown.stdout.startswith("whsec_"), shown.stderr
    assert cli("keys", "webhook-secret", "hook@x").stdout == shown.stdout
    rotated = cli("keys", "webhook-secret", "hook@x", "--rotate")
    assert rotated.stdout.startswith("whsec_") and rotated.stdout != shown.stdout and "rotated" in rotated.stderr
    missing = cli("keys", "webhook-secret", "nobody@x")
    assert missing.returncode == 1 and "no user nobody@x" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.parametrize("url", ["http://example.com/h", "ftp://example.com/h", "https://127.0.0.1/h",
                                 "https://10.1.2.3/h", "https://169.254.169.254/latest/meta-data",
                                 "https://[::1]/h", "https://[::ffff:127.0.0.1]/h", "https://100.64.0.1/h",
                                 "https://localhost/h", "https://user:pw@example.com/h", "https:///h",
                                 "https://example.com:99999/h"])
def test_refused_webhook_urls(url):
    with pytest.raises(Refused):
        check_url(url, allow_private=False)


def test_allowed_urls_and_the_connect_time_check():
    assert check_url("https://hooks.example.com/x?y=1", False) == ("https", "hooks.example.com", 443, "/x?y=1")
    assert check_url("http://127.0.0.1:8080/h", True)[2] == 8080
    with pytest.raises(Refused, match="not a public address"):
        check_resolved("https://localhost:8443/h", allow_private=False)
    # the connection checks what the name resolves to now, whatever it resolved to before
    with pytest.raises(Refused, match="resolves to .*, which is not a public address"):
        connect("localhost", 9, 1.0, allow_private=False)
