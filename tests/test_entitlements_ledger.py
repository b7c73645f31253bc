"""Reservation lifecycle, periods, plan changes, draw order and denials."""

import threading
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, func, select

from entitlements import (CapabilityDenied, IdempotencyMismatch, OutOfCredits, PlanLimitExceeded, QuotaExceeded,
                          authorize_and_consume, settle, state, sweep)
from entitlements.accounts import change_plan, create_user, grant_credits
from entitlements.schema import CreditBalance, CreditLedger, UsageCounter, UsageEvent

T0 = datetime(2026, 11, 23, 23, 59, 0, tzinfo=timezone.utc)


def counter(db, uid, day):
    with Session(db) as s:
        row = s.get(UsageCounter, (uid, "stem_split", day))
        return row.used if row else 0


def event(db, event_id):
    with Session(db) as s:
        return s.get(UsageEvent, event_id)


def test_commit_keeps_usage_release_refunds_once(db):
    user, key = create_user(db, "a@x", "free")
    ok = authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    bad = authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    assert event(db, ok.event_id).status == "reserved"  # on the books before any job ran
    assert settle(db, ok.event_id, True) == "committed"
    assert settle(db, bad.event_id, False, "model crashed") == "released"
    assert settle(db, bad.event_id, False) is None and settle(db, ok.event_id, False) is None
    assert counter(db, user.id, T0.date()) == 1
    assert event(db, bad.event_id).release_reason == "model crashed"


def test_refund_after_rollover_goes_to_the_original_period(db):
    user, key = create_user(db, "b@x", "free")
    d = authorize_and_consume(db, "stem_split", api_key=key, now=T0)  # 23:59
    later = T0 + timedelta(minutes=5)  # the next day
    authorize_and_consume(db, "stem_split", api_key=key, now=later)
    settle(db, d.event_id, False, now=later)
    assert counter(db, user.id, T0.date()) == 0
    assert counter(db, user.id, later.date()) == 1


def test_daily_rollover_and_retry_after(db):
    user, key = create_user(db, "c@x", "free")
    for _ in range(5):
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    with pytest.raises(QuotaExceeded) as info:
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    err = info.value
    assert err.status == 429 and err.headers["Retry-After"] == "60"  # 23:59 → midnight
    assert err.headers["RateLimit-Policy"] == '"stem_split";q=5;w=86400'
    assert err.headers["RateLimit"] == '"stem_split";r=0;t=60'
    assert err.extra["reset_at"] == "2026-11-24T00:00:00Z"
    fresh = authorize_and_consume(db, "stem_split", api_key=key, now=T0 + timedelta(seconds=61))
    assert fresh.used == 1 and fresh.remaining == 4


def test_upgrade_takes_effect_at_once_downgrade_clamps_at_zero(db):
    user, key = create_user(db, "d@x", "free")
    for _ in range(5):
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    change_plan(db, "d@x", "pro")
    up = authorize_and_consume(db, "stem_split", api_key=key, variant="5stem", now=T0)
    assert (up.plan, up.limit, up.used, up.remaining) == ("pro", 200, 6, 194)
    for _ in range(10):
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)
    change_plan(db, "d@x", "free")
    assert state(db, user.id, T0)["capabilities"]["stem_split"]["remaining"] == 0
    with pytest.raises(QuotaExceeded):
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)


def test_quota_first_then_credits_then_denial(db):
    user, key = create_user(db, "e@x", "free")
    grant_credits(db, "e@x", "stem_split_single", 2)
    sources = [authorize_and_consume(db, "stem_split", api_key=key, now=T0).source for _ in range(7)]
    assert sources == ["quota"] * 5 + ["credits"] * 2
    with pytest.raises(QuotaExceeded):  # the quota ran out: a 429 with a reset time
        authorize_and_consume(db, "stem_split", api_key=key, now=T0)


def test_credit_refund_has_a_ledger_row_and_sum_equals_balance(db):
    user, key = create_user(db, "f@x", "credits_only")
    grant_credits(db, "f@x", "stem_split_single", 2)
    d = authorize_and_consume(db, "stem_split", api_key=key)
    assert d.source == "credits" and d.credits_remaining == 1
    settle(db, d.event_id, False, "our fault")
    with Session(db) as s:
        rows = s.exec(select(CreditLedger).where(CreditLedger.user_id == user.id).order_by(CreditLedger.id)).all()
        balance = s.get(CreditBalance, (user.id, "stem_split_single")).balance
    assert [(r.reason, r.delta) for r in rows] == [("grant", 2), ("consume", -1), ("refund", 1)]
    assert sum(r.delta for r in rows) == balance == 2
    authorize_and_consume(db, "stem_split", api_key=key)
    authorize_and_consume(db, "stem_split", api_key=key)
    with pytest.raises(OutOfCredits) as info:  # no quota in this plan: a 402
        authorize_and_consume(db, "stem_split", api_key=key)
    assert info.value.status == 402 and info.value.extra["balance"] == 0


def test_sweeper_and_late_settle_refund_exactly_once(db):
    user, key = create_user(db, "g@x", "credits_only")
    grant_credits(db, "g@x", "stem_split_single", 20)
    decisions = [authorize_and_consume(db, "stem_split", api_key=key, now=T0, ttl_s=60) for _ in range(10)]
    later = T0 + timedelta(minutes=5)
    gate = threading.Barrier(11)

    def late_settle(d):
        gate.wait()
        settle(db, d.event_id, False, "late worker", now=later)

    threads = [threading.Thread(target=late_settle, args=(d,)) for d in decisions]
    threads.append(threading.Thread(target=lambda: (gate.wait(), sweep(db, now=later))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(db) as s:
        balance = s.get(CreditBalance, (user.id, "stem_split_single")).balance
        refunds = s.exec(select(func.count()).select_from(CreditLedger).where(CreditLedger.reason == "refund")).one()
        ledger = s.exec(select(func.sum(CreditLedger.delta)).where(CreditLedger.user_id == user.id)).one()
    assert refunds == 10 and balance == 20 == ledger


def test_sweeper_leaves_live_reservations(db):
    user, key = create_user(db, "h@x", "free")
    d = authorize_and_consume(db, "stem_split", api_key=key, now=T0, ttl_s=3600)
    assert sweep(db, now=T0 + timedelta(minutes=30)) == 0
    assert sweep(db, now=T0 + timedelta(hours=2)) == 1
    assert event(db, d.event_id).status == "released"
    assert counter(db, user.id, T0.date()) == 0


def test_idempotent_replay_and_mismatch(db):
    user, key = create_user(db, "i@x", "free")
    first = authorize_and_consume(db, "stem_split", api_key=key, idempotency_key="abc", fingerprint="f1")
    again = authorize_and_consume(db, "stem_split", api_key=key, idempotency_key="abc", fingerprint="f1")
    assert again.replayed and again.event_id == first.event_id and again.used == 1
    with pytest.raises(IdempotencyMismatch) as info:
        authorize_and_consume(db, "stem_split", api_key=key, idempotency_key="abc", fingerprint="f2")
    assert info.value.status == 422


def test_capability_and_plan_limits(db):
    _, free = create_user(db, "j@x", "free")
    _, vip = create_user(db, "k@x", "vip")
    with pytest.raises(CapabilityDenied) as info:
        authorize_and_consume(db, "audio_enhance", api_key=free)
    assert info.value.status == 403
    with pytest.raises(PlanLimitExceeded, match="up to 10 min"):
        authorize_and_consume(db, "stem_split", api_key=free, input_seconds=601)
    with pytest.raises(PlanLimitExceeded, match="not 5stem"):
        authorize_and_consume(db, "stem_split", api_key=free, variant="5stem")
    d = authorize_and_consume(db, "stem_split", api_key=vip, input_seconds=3500, variant="5stem")
    assert (d.source, d.limit, d.remaining, d.priority) == ("unlimited", None, None, "high")
    # nothing was consumed by the denials
    assert state(db, d.user_id)["capabilities"]["stem_split"]["used"] == 1


def test_decision_carries_tier_data(db):
    _, key = create_user(db, "l@x", "free")
    d = authorize_and_consume(db, "stem_split", api_key=key)
    assert (d.execution_mode, d.priority, d.max_input_seconds, d.variants) == ("cpu_only", "low", 600, ["2stem"])
