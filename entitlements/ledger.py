"""Authorize and consume in one transaction; settle or sweep reservations exactly once.

The decision *is* the write: a quota is consumed by one conditional UPDATE
(`used + n <= limit`), credits by `balance >= n`; the outcome is read from RETURNING. No
SELECT-then-UPDATE anywhere, so no burst of parallel requests can pass a limit, on SQLite
(serialized by BEGIN IMMEDIATE) or PostgreSQL (row re-check under READ COMMITTED).

Draw order for a job of capability C: the plan's own row for C first — unlimited, or its
quota for the period — then the credits of any capability that covers C (e.g. credits of
`stem_split_single` pay for a `stem_split`), in plan order. So purchased credits are never
spent while the plan's included allowance lasts. A denial after an exhausted quota is a 429
(with the reset time), a denial with no quota at all is a 402.

Each consume records a `reserved` usage event in the same transaction (usage is on the
books before any inference). `settle` moves it to `committed` or `released` (refunding the
counter or the credits, with a ledger row) by compare-and-set on status='reserved'; the
sweeper releases expired reservations through the same CAS, so a late settle racing a
sweep can never refund twice. A refund goes to the period the event was charged in.
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from datetime import date, datetime, time, timedelta, timezone

from sqlalchemy import and_, func, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from . import keys
from .keys import Account
from .errors import (CapabilityDenied, IdempotencyMismatch, OutOfCredits, PlanLimitExceeded,
                     QuotaExceeded, Unauthorized, ratelimit_headers)
from .schema import (Capability, CreditBalance, CreditLedger, Plan, PlanCapability, Subscription,
                     UsageCounter, UsageEvent, User, iso, utcnow)

DEFAULT_TTL_S = 2 * 3600
LIFETIME = date(1970, 1, 1)


def insert_for(s: Session, table):
    return (postgresql.insert if s.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def period_bounds(period: str, now: datetime) -> tuple[date, datetime | None, int | None]:
    """(period start, reset time, window seconds) of the period containing `now` (UTC)."""
    if period == "day":
        start = now.date()
        return start, datetime.combine(start + timedelta(days=1), time(), timezone.utc), 86400
    if period == "month":
        start = date(now.year, now.month, 1)
        nxt = date(now.year + now.month // 12, now.month % 12 + 1, 1)
        return start, datetime.combine(nxt, time(), timezone.utc), int((nxt - start).total_seconds())
    return LIFETIME, None, None


@dataclass(frozen=True)
class Decision:
    event_id: str
    user_id: int
    email: str
    plan: str
    capability: str
    source: str  # quota | unlimited | credits
    amount: int
    limit: int | None
    used: int
    remaining: int | None
    reset_at: datetime | None
    window_s: int | None
    credits_remaining: int | None
    execution_mode: str
    priority: str
    max_input_seconds: int | None
    variants: list | None
    default_variant: str | None
    replayed: bool = False

    def headers(self, now: datetime | None = None) -> dict[str, str]:
        reset_s = max(0, int((self.reset_at - (now or utcnow())).total_seconds())) if self.reset_at else None
        return ratelimit_headers(self.capability, self.limit, self.remaining, reset_s, self.window_s)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["reset_at"] = iso(self.reset_at)
        return d


def current_plan(s: Session, user: User) -> Plan:
    sub = s.get(Subscription, user.id)
    if sub is None:
        raise Unauthorized(f"user {user.email} has no plan")
    return s.get(Plan, sub.plan_id)


@dataclass(frozen=True)
class Limits:
    """One plan_capabilities row with its capability's kind."""

    capability: str
    kind: str
    quota: int | None
    period: str
    max_input_seconds: int | None
    variants: list | None
    default_variant: str | None


def _rows(s: Session, plan_id: int, capability: str) -> tuple[Limits | None, list[Limits]]:
    """The plan's own row for `capability` (unless it is a credit capability), and the rows
    of credit capabilities that pay for it (the capability itself, if asked for directly)."""
    rows = s.execute(
        select(PlanCapability.capability_code, Capability.kind, PlanCapability.quota, PlanCapability.period,
               PlanCapability.max_input_seconds, PlanCapability.variants, PlanCapability.default_variant)
        .join(Capability, Capability.code == PlanCapability.capability_code)
        .where(PlanCapability.plan_id == plan_id,
               or_(PlanCapability.capability_code == capability,
                   and_(Capability.covers == capability, Capability.kind == "credits")))
        .order_by(PlanCapability.capability_code)).all()
    limits = [Limits(*r) for r in rows]
    own = next((r for r in limits if r.capability == capability and r.kind == "quota"), None)
    credits = [r for r in limits if r.kind == "credits"]
    credits.sort(key=lambda r: r.capability != capability)  # asked-for capability first
    return own, credits


def _account(s: Session, api_key: str | None, user_id: int | None, now: datetime) -> Account:
    if api_key is not None or user_id is None:
        return keys.resolve(s, api_key, now)
    row = s.execute(keys.account_query().where(User.id == user_id)).first()
    if row is None:
        raise Unauthorized(f"unknown user {user_id}")
    return Account(*row)


def _counter_used(s: Session, user_id: int, capability: str, start: date) -> int:
    row = s.get(UsageCounter, (user_id, capability, start))
    return row.used if row else 0


def _balance(s: Session, user_id: int, capability: str) -> int:
    row = s.get(CreditBalance, (user_id, capability))
    return row.balance if row else 0


def _balances(s: Session, user_id: int, credits: list[Limits]) -> int | None:
    if not credits:
        return None
    total = s.execute(select(func.coalesce(func.sum(CreditBalance.balance), 0)).where(
        CreditBalance.user_id == user_id, CreditBalance.capability_code.in_([c.capability for c in credits]))).scalar()
    return int(total)


def _decision(s: Session, acct: Account, capability: str, event_id: str, source: str, amount: int,
              own: Limits | None, credits: list[Limits], used: int | None, now: datetime,
              replayed: bool = False) -> Decision:
    limits = own or credits[0]
    limit = remaining = reset = window = None
    if own is not None:
        start, reset, window = period_bounds(own.period, now)
        if used is None:
            used = s.execute(select(UsageCounter.used).where(
                UsageCounter.user_id == acct.user_id, UsageCounter.capability_code == capability,
                UsageCounter.period_start == start)).scalar() or 0
        limit = own.quota
        remaining = None if limit is None else max(0, limit - used)  # a downgrade clamps at 0
    return Decision(event_id, acct.user_id, acct.email, acct.plan, capability, source, amount, limit, used or 0,
                    remaining, reset, window, _balances(s, acct.user_id, credits), acct.execution_mode,
                    acct.priority, limits.max_input_seconds, limits.variants, limits.default_variant, replayed)


def _check_limits(plan_name: str, max_input_seconds: int | None, variants: list | None,
                  input_seconds: float | None, variant: str | None) -> None:
    if input_seconds is not None and max_input_seconds is not None and input_seconds > max_input_seconds:
        raise PlanLimitExceeded(
            f"the {plan_name} plan accepts files up to {max_input_seconds / 60:g} min; "
            f"this one lasts {input_seconds / 60:.1f} min", limit="max_input_seconds",
            allowed=max_input_seconds, actual=round(input_seconds, 2))
    if variant is not None and variants is not None and variant not in variants:
        raise PlanLimitExceeded(f"the {plan_name} plan allows {', '.join(variants)}, not {variant}",
                                limit="variants", allowed=variants, actual=variant)


def _consume_quota(s: Session, user_id: int, own: Limits, amount: int, now: datetime) -> tuple[int | None, date]:
    """One conditional upsert: insert the period's counter or add to it, only within the limit.
    Returns the new count, or None when the quota does not have `amount` left."""
    start, _, _ = period_bounds(own.period, now)
    if own.quota is not None and amount > own.quota:
        return None, start
    ins = insert_for(s, UsageCounter).values(user_id=user_id, capability_code=own.capability,
                                             period_start=start, used=amount)
    upsert = ins.on_conflict_do_update(
        index_elements=["user_id", "capability_code", "period_start"],
        set_={"used": UsageCounter.used + amount},
        where=(UsageCounter.used + amount <= own.quota) if own.quota is not None else None)
    return s.execute(upsert.returning(UsageCounter.used)).scalar(), start


def _authorize(s: Session, capability: str, amount: int, api_key: str | None, user_id: int | None,
               idempotency_key: str | None, fingerprint: str | None, input_seconds: float | None,
               variant: str | None, now: datetime, ttl_s: int) -> Decision:
    acct = _account(s, api_key, user_id, now)
    own, credits = _rows(s, acct.plan_id, capability)
    if own is None and not credits:
        raise CapabilityDenied(f"the {acct.plan_name} plan does not include {capability}", capability=capability,
                               plan=acct.plan)
    limits = own or credits[0]
    _check_limits(acct.plan_name, limits.max_input_seconds, limits.variants, input_seconds, variant)

    if idempotency_key:
        prev = s.execute(select(UsageEvent.id, UsageEvent.capability_code, UsageEvent.fingerprint,
                                UsageEvent.source, UsageEvent.amount)
                         .where(UsageEvent.user_id == acct.user_id,
                                UsageEvent.idempotency_key == idempotency_key)).first()
        if prev is not None:
            if prev.capability_code != capability or (fingerprint and prev.fingerprint and prev.fingerprint != fingerprint):
                raise IdempotencyMismatch("this Idempotency-Key was used for a different request",
                                          idempotency_key=idempotency_key)
            return _decision(s, acct, capability, prev.id, prev.source, prev.amount, own, credits, None, now,
                             replayed=True)

    event_id = uuid.uuid4().hex
    source = charged = start = used = None
    if own is not None:
        used, start = _consume_quota(s, acct.user_id, own, amount, now)
        if used is not None:
            source, charged = ("unlimited" if own.quota is None else "quota"), capability
    if source is None:
        for row in credits:
            got = s.execute(update(CreditBalance)
                            .where(CreditBalance.user_id == acct.user_id,
                                   CreditBalance.capability_code == row.capability,
                                   CreditBalance.balance >= amount)
                            .values(balance=CreditBalance.balance - amount).returning(CreditBalance.balance)
                            .execution_options(synchronize_session=False)).first()
            if got is not None:
                source, charged, start = "credits", row.capability, None
                s.add(CreditLedger(user_id=acct.user_id, capability_code=charged, delta=-amount, reason="consume",
                                   source_ref=event_id, usage_event_id=event_id, created_at=now))
                break
    if source is None:
        if own is not None and own.quota is not None:
            _, reset, window = period_bounds(own.period, now)
            current = s.execute(select(UsageCounter.used).where(
                UsageCounter.user_id == acct.user_id, UsageCounter.capability_code == capability,
                UsageCounter.period_start == start)).scalar() or 0
            raise QuotaExceeded(f"the {acct.plan_name} plan's {own.quota} {capability} per {own.period} are used up",
                                capability=capability, limit=own.quota, used=current, reset_at=reset, now=now,
                                window_s=window)
        balance = _balances(s, acct.user_id, credits) or 0
        raise OutOfCredits(f"{amount} credit(s) needed for {capability}, {balance} available",
                           capability=capability, balance=balance, required=amount)

    s.add(UsageEvent(id=event_id, user_id=acct.user_id, capability_code=capability, charged_capability=charged,
                     source=source, amount=amount, period_start=start, idempotency_key=idempotency_key,
                     fingerprint=fingerprint, created_at=now, expires_at=now + timedelta(seconds=ttl_s)))
    s.flush()  # an idempotency twin committed meanwhile fails here, inside this transaction
    return _decision(s, acct, capability, event_id, source, amount, own, credits,
                     used if source != "credits" else None, now)


def authorize_and_consume(engine: Engine, capability: str, amount: int = 1, *, api_key: str | None = None,
                          user_id: int | None = None, idempotency_key: str | None = None,
                          fingerprint: str | None = None, input_seconds: float | None = None,
                          variant: str | None = None, now: datetime | None = None,
                          ttl_s: int = DEFAULT_TTL_S) -> Decision:
    """Resolve the caller, check the capability and its limits, consume, record a reservation."""
    if amount < 1:
        raise ValueError("amount must be at least 1")
    now = now or utcnow()
    for attempt in range(3):
        try:
            with Session(engine, expire_on_commit=False) as s, s.begin():
                return _authorize(s, capability, amount, api_key, user_id, idempotency_key, fingerprint,
                                  input_seconds, variant, now, ttl_s)
        except IntegrityError:
            # only the idempotency key can collide: a concurrent request with the same key won;
            # a fresh transaction now sees its event and replays the decision
            if not idempotency_key or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _refund(s: Session, event) -> None:
    if event.source in ("quota", "unlimited"):
        s.execute(update(UsageCounter)
                  .where(UsageCounter.user_id == event.user_id, UsageCounter.capability_code == event.charged_capability,
                         UsageCounter.period_start == event.period_start, UsageCounter.used >= event.amount)
                  .values(used=UsageCounter.used - event.amount).execution_options(synchronize_session=False))
    else:
        add_credits(s, event.user_id, event.charged_capability, event.amount, "refund", event.id)


def add_credits(s: Session, user_id: int, capability: str, amount: int, reason: str, source_ref: str,
                usage_event_id: str | None = None) -> bool:
    """Append a ledger row and move the balance; False (and no change) if `source_ref` was already applied."""
    got = s.execute(insert_for(s, CreditLedger).values(
        user_id=user_id, capability_code=capability, delta=amount, reason=reason, source_ref=source_ref,
        usage_event_id=usage_event_id, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["reason", "source_ref"]).returning(CreditLedger.id)).first()
    if got is None:
        return False
    stmt = insert_for(s, CreditBalance).values(user_id=user_id, capability_code=capability, balance=amount)
    s.execute(stmt.on_conflict_do_update(index_elements=["user_id", "capability_code"],
                                         set_={"balance": CreditBalance.balance + amount}))
    return True


def settle_in(s: Session, event_id: str, ok: bool, reason: str | None = None,
              now: datetime | None = None) -> str | None:
    """`settle` inside the caller's transaction: a record that ends with its charge (a job done
    and its usage committed) is never seen, nor left by a crash, half-way."""
    status = "committed" if ok else "released"
    row = s.execute(update(UsageEvent).where(UsageEvent.id == event_id, UsageEvent.status == "reserved")
                    .values(status=status, settled_at=now or utcnow(), release_reason=reason)
                    .returning(UsageEvent.id, UsageEvent.user_id, UsageEvent.charged_capability,
                               UsageEvent.source, UsageEvent.amount, UsageEvent.period_start)
                    .execution_options(synchronize_session=False)).first()
    if row is None:
        return None  # already settled: nothing to do, nothing refunded twice
    if not ok:
        _refund(s, row)
    return status


def settle(engine: Engine, event_id: str, ok: bool, reason: str | None = None,
           now: datetime | None = None) -> str | None:
    """Commit (ok) or release and refund (not ok) a reservation; None if it was already settled."""
    with Session(engine) as s, s.begin():
        return settle_in(s, event_id, ok, reason, now)


def extend(engine: Engine, event_id: str, ttl_s: int, now: datetime | None = None) -> bool:
    """Push a live reservation's expiry out (a long job still running is not a dead worker)."""
    now = now or utcnow()
    with Session(engine) as s, s.begin():
        res = s.execute(update(UsageEvent).where(UsageEvent.id == event_id, UsageEvent.status == "reserved")
                        .values(expires_at=now + timedelta(seconds=ttl_s)))
        return res.rowcount == 1


def sweep(engine: Engine, now: datetime | None = None, batch: int = 500) -> int:
    """Release reservations past their expiry (a dead worker's jobs); returns how many."""
    now = now or utcnow()
    with Session(engine) as s, s.begin():
        ids = s.exec(select(UsageEvent.id).where(UsageEvent.status == "reserved", UsageEvent.expires_at < now)
                     .limit(batch)).all()
    released = 0
    for event_id in ids:
        with Session(engine) as s, s.begin():
            released += settle_in(s, event_id, False, "expired: swept", now) == "released"
    return released


def state(engine: Engine, user_id: int, now: datetime | None = None) -> dict:
    """Plan, capabilities and what is left of each, for `GET /api/me` and `usage show`."""
    now = now or utcnow()
    with Session(engine) as s:
        user = s.get(User, user_id)
        plan = current_plan(s, user)
        caps = {}
        rows = s.exec(select(PlanCapability, Capability).join(Capability)
                      .where(PlanCapability.plan_id == plan.id).order_by(PlanCapability.capability_code)).all()
        for row, cap in rows:
            entry = {"kind": cap.kind, "description": cap.description, "max_input_seconds": row.max_input_seconds,
                     "variants": row.variants, "default_variant": row.default_variant}
            if cap.kind == "quota":
                start, reset, _ = period_bounds(row.period, now)
                used = _counter_used(s, user.id, cap.code, start)
                entry |= {"period": row.period, "limit": row.quota, "used": used,
                          "remaining": None if row.quota is None else max(0, row.quota - used),
                          "reset_at": iso(reset)}
            else:
                entry |= {"covers": cap.covers, "balance": _balance(s, user.id, cap.code)}
            caps[cap.code] = entry
        # every credit balance the account holds, also of capabilities its plan does not use
        held = s.exec(select(CreditBalance).where(CreditBalance.user_id == user.id)).all()
        credits = {c.code: 0 for c in s.exec(select(Capability).where(Capability.kind == "credits")).all()}
        credits |= {row.capability_code: row.balance for row in held}
        return {"user": user.email, "plan": plan.code, "plan_name": plan.name,
                "execution_mode": plan.execution_mode, "priority": plan.priority, "capabilities": caps,
                "credits": dict(sorted(credits.items()))}


@dataclass(frozen=True)
class Caller:
    """Who is calling and what their plan allows for one capability (read-only, consumes nothing)."""

    user_id: int
    plan: str
    plan_name: str
    max_input_seconds: int | None
    variants: list | None
    default_variant: str | None

    def check(self, input_seconds: float | None = None, variant: str | None = None) -> None:
        """Raise PlanLimitExceeded as `authorize_and_consume` would, without consuming."""
        _check_limits(self.plan_name, self.max_input_seconds, self.variants, input_seconds, variant)


def peek(engine: Engine, api_key: str | None, capability: str | None = None) -> Caller:
    """Resolve a key (401) and, if given, check the capability is in the plan (403), cheaply,
    before an upload is read; `authorize_and_consume` checks all of it again atomically."""
    with Session(engine) as s, s.begin():
        acct = keys.resolve(s, api_key)
        if capability is None:
            return Caller(acct.user_id, acct.plan, acct.plan_name, None, None, None)
        own, credits = _rows(s, acct.plan_id, capability)
        if own is None and not credits:
            raise CapabilityDenied(f"the {acct.plan_name} plan does not include {capability}",
                                   capability=capability, plan=acct.plan)
        row = own or credits[0]
        return Caller(acct.user_id, acct.plan, acct.plan_name, row.max_input_seconds, row.variants,
                      row.default_variant)
