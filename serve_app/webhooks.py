"""Job webhooks: a POST to the URL a job was submitted with (`webhook`) when it ends.

When a job ends (done, failed or cancelled) the same transaction that ends it records a
delivery (serve_app/jobs.py), so an ended job always has its event, whichever process ended
it and whatever happens to that process next. The Dispatcher sends pending deliveries
(at least once: a receiver dedupes by the event id) and retries any answer but 2xx, and any
network fault, with exponential back-off from `webhook_first_retry_s`, doubling, at most an
hour apart, for `webhook_retry_window_s` (24 h); then the delivery is `failed`. Each attempt
is kept on the delivery and shown in GET /api/jobs/{id}.

The body is JSON, the same bytes on every attempt:
    {"id": "evt_…", "type": "job.done" | "job.failed" | "job.cancelled", "created": <unix s>, "job": {…}}
with headers `Locoserve-Event-Id: evt_…` and
    Locoserve-Signature: t=<unix seconds of this attempt>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>
where the secret is the user's (`locoserve keys webhook-secret EMAIL` shows or rotates it). A
receiver recomputes v1 over the raw body and compares in constant time, and refuses a `t` far
from its clock (`verify` below does both), as with Stripe's signatures.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import secrets
import time
import uuid
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import JSON, Column, update
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, select

from entitlements.schema import iso, utcnow

from .outbound import Refused, post

log = logging.getLogger("ray.serve")

MAX_BACKOFF_S = 3600.0
BATCH = 20  # deliveries sent at once per round
TOLERANCE_S = 300  # how far a receiver should accept `t` from its own clock


class WebhookSecret(SQLModel, table=True):
    __tablename__ = "webhook_secrets"
    user_id: int = Field(primary_key=True, foreign_key="users.id")
    secret: str
    created_at: datetime = Field(default_factory=utcnow)


class WebhookDelivery(SQLModel, table=True):
    __tablename__ = "webhook_deliveries"
    id: str = Field(primary_key=True)  # the event id: the receiver's key to dedupe
    job_id: str = Field(index=True)
    user_id: int = Field(foreign_key="users.id")
    url: str
    type: str
    payload: str
    status: str = Field(default="pending", index=True)  # pending | delivered | failed
    attempts: list = Field(default_factory=list, sa_column=Column(JSON))
    next_at: datetime = Field(default_factory=utcnow, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    delivered_at: Optional[datetime] = None


def secret_for(engine: Engine, user_id: int, rotate: bool = False) -> str:
    """The user's signing secret, made on first use; `rotate` replaces it."""
    with Session(engine) as s, s.begin():
        row = s.get(WebhookSecret, user_id)
        if row is None or rotate:
            fresh = f"whsec_{secrets.token_urlsafe(32)}"
            if row is None:
                s.add(WebhookSecret(user_id=user_id, secret=fresh))
            else:
                row.secret, row.created_at = fresh, utcnow()
            return fresh
        return row.secret


def sign(secret: str, body: bytes, t: int) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(secret: str, body: bytes, header: str, now: float | None = None, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: the signature over the raw body, and a timestamp near its clock."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        t = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((now if now is not None else time.time()) - t) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, body, t).split("v1=", 1)[1], fields.get("v1", ""))


def new_event(job_id: str, user_id: int, url: str, status: str, job: dict) -> WebhookDelivery:
    """The delivery of a job's end, to be added in the transaction that ends it."""
    event_id = f"evt_{uuid.uuid4().hex}"
    now = utcnow()
    payload = {"id": event_id, "type": f"job.{status}", "created": int(now.timestamp()), "job": job}
    return WebhookDelivery(id=event_id, job_id=job_id, user_id=user_id, url=url, type=f"job.{status}",
                           payload=json.dumps(payload, separators=(",", ":")), next_at=now, created_at=now)


def backoff(attempt: int, first_s: float) -> float:
    """Seconds before the next attempt, after `attempt` failed ones (1, 2, …)."""
    return min(first_s * 2 ** (attempt - 1), MAX_BACKOFF_S)


def view(engine: Engine, job_id: str) -> list[dict]:
    """The job's deliveries as GET /api/jobs/{id} shows them."""
    with Session(engine) as s:
        rows = s.exec(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)
                      .order_by(WebhookDelivery.created_at)).all()
    return [{"event_id": d.id, "type": d.type, "status": d.status, "attempts": d.attempts,
             "next_attempt_at": iso(d.next_at) if d.status == "pending" else None,
             "delivered_at": iso(d.delivered_at)} for d in rows]


class Deliverer:
    """Sends due deliveries; one round at a time (the Dispatcher calls `round` in a loop)."""

    def __init__(self, engine: Engine, allow_private: bool, first_retry_s: float, window_s: float,
                 timeout_s: float):
        self.engine, self.allow_private = engine, allow_private
        self.first_retry_s, self.window_s, self.timeout_s = first_retry_s, window_s, timeout_s

    def _due(self) -> list[WebhookDelivery]:
        with Session(self.engine) as s:
            return list(s.exec(select(WebhookDelivery).where(WebhookDelivery.status == "pending",
                                                            WebhookDelivery.next_at <= utcnow())
                               .order_by(WebhookDelivery.next_at).limit(BATCH)).all())

    def _secret(self, user_id: int) -> str:
        return secret_for(self.engine, user_id)

    def _send(self, d: WebhookDelivery) -> tuple[int | None, str | None]:
        body = d.payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "Locoserve-Webhooks/1",
                   "Locoserve-Event-Id": d.id,
                   "Locoserve-Signature": sign(self._secret(d.user_id), body, int(time.time()))}
        try:
            code = post(d.url, body, headers, self.timeout_s, self.allow_private)
        except Refused as e:
            return None, f"refused: {e}"
        except Exception as e:  # noqa: BLE001 (any network fault is one failed attempt)
            return None, f"{type(e).__name__}: {e}"[:300]
        return code, None if 200 <= code < 300 else f"answered {code}"

    def _record(self, d: WebhookDelivery, code: int | None, error: str | None) -> str:
        now = utcnow()
        attempts = [*d.attempts, {"at": iso(now), "status_code": code, "error": error}]
        values: dict = {"attempts": attempts}
        if error is None:
            values |= {"status": "delivered", "delivered_at": now}
        else:
            created = d.created_at if d.created_at.tzinfo else d.created_at.replace(tzinfo=now.tzinfo)
            later = now + timedelta(seconds=backoff(len(attempts), self.first_retry_s))
            if (later - created).total_seconds() > self.window_s:
                values["status"] = "failed"
                log.error("webhook %s for job %s failed after %d attempts: %s", d.id, d.job_id, len(attempts), error)
            else:
                values["next_at"] = later
        with Session(self.engine) as s, s.begin():
            s.execute(update(WebhookDelivery).where(WebhookDelivery.id == d.id,
                                                    WebhookDelivery.status == "pending").values(**values))
        return values.get("status", "pending")

    def deliver(self, d: WebhookDelivery) -> str:
        return self._record(d, *self._send(d))

    async def round(self) -> int:
        due = await asyncio.to_thread(self._due)
        if due:
            await asyncio.gather(*(asyncio.to_thread(self.deliver, d) for d in due))
        return len(due)
