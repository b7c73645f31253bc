"""Stripe webhooks: signature checks, exactly-once application, ordering, credit packs."""

import json
import threading
import time

import pytest
from sqlmodel import Session, select

from entitlements import state
from entitlements.accounts import create_user
from entitlements.schema import CreditBalance, StripeEvent
from entitlements.stripe_webhooks import MalformedEvent, WebhookError, handle, sign, verify

SECRET = "whsec_test_secret"


def sub_event(eid, kind, customer, lookup, created, status="active"):
    return {"id": eid, "type": f"customer.subscription.{kind}", "created": created,
            "data": {"object": {"id": "sub_1", "customer": customer, "status": status,
                                "items": {"data": [{"price": {"lookup_key": lookup}}]}}}}


def post(db, event, secret=SECRET, t=None):
    body = json.dumps(event).encode()
    return handle(db, body, sign(body, secret, t), [SECRET])


def plan_of(db, uid):
    return state(db, uid)["plan"]


def test_valid_signature_and_upgrade(db):
    user, _ = create_user(db, "a@x", "free", stripe_customer_id="cus_A")
    assert post(db, sub_event("evt_1", "created", "cus_A", "pro_monthly", 100)).startswith("applied")
    assert plan_of(db, user.id) == "pro"


@pytest.mark.parametrize("case", ["tampered", "wrong_secret", "stale", "missing", "malformed"])
def test_bad_signatures_are_refused(case):
    body = json.dumps(sub_event("evt_x", "created", "cus_A", "pro_monthly", 1)).encode()
    header = sign(body, SECRET)
    if case == "tampered":
        body = body.replace(b"pro_monthly", b"vip_monthly")
    elif case == "wrong_secret":
        header = sign(body, "whsec_other")
    elif case == "stale":
        header = sign(body, SECRET, int(time.time()) - 301)
    elif case == "missing":
        header = None
    else:
        header = "v1=abc"
    with pytest.raises(WebhookError) as info:
        verify(body, header, [SECRET])
    assert info.value.status == 400


def test_rotation_accepts_any_v1_and_any_secret():
    body = b'{"id": "evt", "type": "x", "created": 1}'
    t = int(time.time())
    header = sign(body, "whsec_new", t) + "," + sign(body, SECRET, t).split(",")[1]
    assert verify(body, header, ["whsec_old", SECRET])["id"] == "evt"


def test_duplicates_apply_once_even_concurrently(db):
    user, _ = create_user(db, "b@x", "free", stripe_customer_id="cus_B")
    event = {"id": "evt_pack", "type": "checkout.session.completed", "created": 10,
             "data": {"object": {"id": "cs_1", "mode": "payment", "payment_status": "paid", "customer": "cus_B",
                                 "payment_intent": "pi_1", "metadata": {"credit_pack": "single_split_10"}}}}
    gate = threading.Barrier(4)
    outcomes = []

    def deliver():
        gate.wait()
        outcomes.append(post(db, event))

    threads = [threading.Thread(target=deliver) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert sorted(o.split(":")[0] for o in outcomes) == ["applied", "duplicate", "duplicate", "duplicate"]
    # the same payment in another event id is not credited twice either
    assert "already credited" in post(db, dict(event, id="evt_pack_2"))
    with Session(db) as s:
        assert s.get(CreditBalance, (user.id, "stem_split_single")).balance == 10


def test_out_of_order_update_never_overrides_a_newer_one(db):
    user, _ = create_user(db, "c@x", "free", stripe_customer_id="cus_C")
    post(db, sub_event("evt_new", "updated", "cus_C", "vip_monthly", 200))
    assert "older" in post(db, sub_event("evt_old", "updated", "cus_C", "pro_monthly", 100))
    assert plan_of(db, user.id) == "vip"


def test_deletion_and_lapsed_status_move_to_free(db):
    user, _ = create_user(db, "d@x", "pro", stripe_customer_id="cus_D")
    post(db, sub_event("evt_1", "updated", "cus_D", "pro_monthly", 100, status="past_due"))
    assert plan_of(db, user.id) == "pro"  # grace while Stripe retries the payment
    post(db, sub_event("evt_2", "updated", "cus_D", "pro_monthly", 200, status="unpaid"))
    assert plan_of(db, user.id) == "free"
    post(db, sub_event("evt_3", "updated", "cus_D", "pro_monthly", 300))
    post(db, sub_event("evt_4", "deleted", "cus_D", "pro_monthly", 400, status="canceled"))
    assert plan_of(db, user.id) == "free"


def test_unknown_customer_and_event_types_are_acknowledged(db):
    assert post(db, sub_event("evt_u", "created", "cus_nobody", "pro_monthly", 1)) == "ignored: unknown customer"
    assert post(db, {"id": "evt_i", "type": "invoice.paid", "created": 1, "data": {"object": {}}}).startswith("ignored")


def test_customer_linked_by_metadata_email(db):
    user, _ = create_user(db, "e@x", "free")
    event = sub_event("evt_m", "created", "cus_E", "pro_monthly", 5)
    event["data"]["object"]["metadata"] = {"locoserve_email": "e@x"}
    post(db, event)
    assert plan_of(db, user.id) == "pro"
    assert post(db, sub_event("evt_m2", "deleted", "cus_E", "pro_monthly", 6)).startswith("applied")


@pytest.mark.parametrize("event", [
    [1, 2],  # a JSON array
    "evt",  # a JSON string
    {"type": "invoice.paid", "created": 1},  # no id
    {"id": "evt_t", "created": 1},  # no type
    {"id": "evt_c", "type": "invoice.paid", "created": "yesterday"},
    {"id": "evt_d", "type": "customer.subscription.updated", "created": 1, "data": {}},  # no data.object
    {"id": "evt_p", "type": "customer.subscription.updated", "created": 1,  # items without a price
     "data": {"object": {"customer": "cus_M", "status": "active", "items": {"data": [{}]}}}},
], ids=["array", "string", "no-id", "no-type", "bad-created", "no-object", "no-price"])
def test_signed_but_malformed_events_are_400_and_not_recorded(db, event):
    create_user(db, "m@x", "free", stripe_customer_id="cus_M")
    with pytest.raises(MalformedEvent) as info:
        post(db, event)
    assert info.value.status == 400
    with Session(db) as s:  # nothing recorded: a corrected redelivery is still applied
        assert s.exec(select(StripeEvent)).all() == []
