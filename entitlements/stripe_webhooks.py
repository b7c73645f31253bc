"""Stripe webhooks: verify the signature on the raw body, apply each event exactly once.

Verification follows Stripe's scheme: `Stripe-Signature: t=<unix>,v1=<hex>[,v1=…]`, where
each v1 is HMAC-SHA256(secret, f"{t}.{body}"); any v1 may match (secret rotation), compared
in constant time; timestamps older than 300 s are refused. Several secrets may be given
during rotation.

Application is one transaction that first inserts the event id (ON CONFLICT DO NOTHING):
a redelivery, even a concurrent one, finds the id taken and changes nothing.

- customer.subscription.created / updated: the price's lookup key names the plan; statuses
  active, trialing and past_due (grace) keep it, any other status means the free plan. An
  event older than the newest one applied to that subscription is ignored (Stripe delivers
  out of order).
- customer.subscription.deleted: back to the default (free) plan.
- checkout.session.completed in payment mode: the credit pack named by the session's
  `metadata.credit_pack` is granted once per payment (ledger source = payment intent).
Customers are matched on users.stripe_customer_id, else on `metadata.locoserve_email`
(which then links the customer id).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from . import plans
from .accounts import set_plan
from .errors import EntitlementError
from .ledger import add_credits, insert_for
from .schema import CreditPack, Plan, StripeEvent, Subscription, User, utcnow

TOLERANCE_S = 300
KEEP_STATUSES = ("active", "trialing", "past_due")


class WebhookError(EntitlementError):
    status, slug, title = 400, "invalid-webhook", "Webhook signature verification failed"


class MalformedEvent(EntitlementError):
    """Signed, but not an event we can read: a 400 (Stripe will not fix it by retrying, and a
    500 would make it retry for days)."""

    status, slug, title = 400, "bad-request", "Malformed webhook event"


def check_event(event) -> dict:
    """The fields `apply` and its handlers read, with their types."""
    if not isinstance(event, dict):
        raise MalformedEvent(f"the event is a JSON {type(event).__name__}, not an object")
    for name, kind in (("id", str), ("type", str), ("created", int)):
        value = event.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) or (kind is str and not value):
            raise MalformedEvent(f"the event's '{name}' is missing or not a{'n integer' if kind is int else ' string'}")
    if event["type"] in HANDLERS and not isinstance((event.get("data") or {}).get("object"), dict):
        raise MalformedEvent(f"the {event['type']} event has no data.object")
    return event


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """A valid Stripe-Signature header for `payload` (tests, and replaying events locally)."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify(payload: bytes, header: str | None, secrets: list[str], tolerance: int = TOLERANCE_S,
           now: float | None = None) -> dict:
    if not header:
        raise WebhookError("missing Stripe-Signature header")
    parts = [p.split("=", 1) for p in header.split(",") if "=" in p]
    stamps = [v for k, v in parts if k == "t"]
    signatures = [v for k, v in parts if k == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or not signatures:
        raise WebhookError("malformed Stripe-Signature header")
    t = int(stamps[0])
    if (now or time.time()) - t > tolerance:
        raise WebhookError(f"the signature's timestamp is more than {tolerance} s old")
    signed = f"{t}.".encode() + payload
    for secret in secrets:
        expected = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
        if any(hmac.compare_digest(expected, sig) for sig in signatures):
            try:
                return json.loads(payload)
            except ValueError as e:
                raise WebhookError("the body is not JSON") from e
    raise WebhookError("no signature matches the payload")


def _user(s: Session, obj: dict) -> User | None:
    customer = obj.get("customer")
    user = s.exec(select(User).where(User.stripe_customer_id == customer)).first() if customer else None
    email = (obj.get("metadata") or {}).get("locoserve_email")
    if user is None and email:
        user = s.exec(select(User).where(User.email == email)).first()
        if user is not None and customer:
            user.stripe_customer_id = customer
            s.add(user)
    return user


def _subscription(s: Session, event: dict) -> str:
    obj = event["data"]["object"]
    user = _user(s, obj)
    if user is None:
        return "ignored: unknown customer"
    sub = s.get(Subscription, user.id)
    if sub is not None and event["created"] < sub.last_event_created:
        return "ignored: older than the last applied event"
    if event["type"] == "customer.subscription.deleted" or obj.get("status") not in KEEP_STATUSES:
        code = plans.default_plan_code()
        status = "canceled" if event["type"].endswith("deleted") else obj.get("status", "canceled")
    else:
        items = (obj.get("items") or {}).get("data") or []
        lookup = items[0]["price"].get("lookup_key") if items else None
        plan = s.exec(select(Plan).where(Plan.stripe_price_lookup_key == lookup)).first() if lookup else None
        if plan is None:
            return f"ignored: no plan for price lookup key {lookup!r}"
        code, status = plan.code, obj["status"]
    set_plan(s, user, code, status, stripe_subscription_id=obj.get("id"),
             last_event_created=event["created"])
    return f"applied: {user.email} → {code} ({status})"


def _checkout(s: Session, event: dict) -> str:
    obj = event["data"]["object"]
    if obj.get("mode") != "payment" or obj.get("payment_status", "paid") != "paid":
        return "ignored: not a completed payment"
    pack = s.get(CreditPack, (obj.get("metadata") or {}).get("credit_pack", ""))
    if pack is None:
        return "ignored: no credit pack in metadata"
    user = _user(s, obj)
    if user is None:
        return "ignored: unknown customer"
    ref = obj.get("payment_intent") or obj["id"]
    if not add_credits(s, user.id, pack.capability_code, pack.credits, "purchase", ref):
        return "ignored: this payment was already credited"
    return f"applied: {pack.credits} {pack.capability_code} credits to {user.email}"


HANDLERS = {
    "customer.subscription.created": _subscription,
    "customer.subscription.updated": _subscription,
    "customer.subscription.deleted": _subscription,
    "checkout.session.completed": _checkout,
}


def apply(engine: Engine, event: dict) -> str:
    """Apply a verified event once; returns what happened (for logs and the HTTP reply)."""
    with Session(engine) as s, s.begin():
        fresh = s.execute(insert_for(s, StripeEvent).values(event_id=event["id"], type=event["type"],
                                                            created=event["created"], outcome="",
                                                            processed_at=utcnow())
                          .on_conflict_do_nothing(index_elements=["event_id"])
                          .returning(StripeEvent.event_id)).first()
        if fresh is None:
            return "duplicate: already processed"
        handler = HANDLERS.get(event["type"])
        try:
            outcome = handler(s, event) if handler else f"ignored: {event['type']} is not handled"
        except (KeyError, IndexError, TypeError, AttributeError) as e:
            # a field the handler needs is missing or of the wrong shape; raising rolls the
            # event id back too, so a corrected redelivery is still applied
            raise MalformedEvent(f"the {event['type']} event lacks a usable field ({type(e).__name__}: {e})") from e
        row = s.get(StripeEvent, event["id"])
        row.outcome = outcome[:200]
        s.add(row)
        return outcome


def handle(engine: Engine, payload: bytes, header: str | None, secrets: list[str]) -> str:
    return apply(engine, check_event(verify(payload, header, secrets)))
