"""Tables (SQLModel on SQLAlchemy 2). Tiers, capabilities and credit packs are rows seeded from
configs/plans.yaml; nothing about a tier is written in code.

Counters and balances carry CHECK constraints as a backstop: the conditional UPDATEs in
`ledger.py` are what keep them in range, the CHECKs make a bug fail loudly instead of
silently over-consuming.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

from sqlalchemy import JSON, CheckConstraint, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 1


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def iso(dt: datetime | None) -> str | None:
    """RFC 3339 in UTC with a Z, as the API shows times."""
    return dt.astimezone(timezone.utc).isoformat().replace("+00:00", "Z") if dt else None


class SchemaInfo(SQLModel, table=True):
    __tablename__ = "schema_info"
    id: int = Field(default=1, primary_key=True)
    version: int


class User(SQLModel, table=True):
    __tablename__ = "users"
    id: Optional[int] = Field(default=None, primary_key=True)
    email: str = Field(unique=True, index=True)
    stripe_customer_id: Optional[str] = Field(default=None, unique=True)
    created_at: datetime = Field(default_factory=utcnow)


class ApiKey(SQLModel, table=True):
    """Only the SHA-256 of a key is stored; the plaintext is shown once at creation."""

    __tablename__ = "api_keys"
    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    key_hash: str = Field(unique=True, index=True)
    display_prefix: str
    name: str = ""
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: Optional[datetime] = None
    expires_at: Optional[datetime] = None
    revoked_at: Optional[datetime] = None


class Plan(SQLModel, table=True):
    __tablename__ = "plans"
    id: Optional[int] = Field(default=None, primary_key=True)
    code: str = Field(unique=True, index=True)
    name: str
    execution_mode: str  # cpu_only | gpu_allowed
    priority: str  # low | normal | high
    stripe_price_lookup_key: Optional[str] = Field(default=None, unique=True)
    active: bool = True


class Capability(SQLModel, table=True):
    __tablename__ = "capabilities"
    code: str = Field(primary_key=True)
    kind: str  # quota | credits
    covers: Optional[str] = None  # a credits capability that pays for jobs of this capability
    description: str = ""


class PlanCapability(SQLModel, table=True):
    """A capability in a plan, with its count limit and the limits that are not counts."""

    __tablename__ = "plan_capabilities"
    plan_id: int = Field(foreign_key="plans.id", primary_key=True)
    capability_code: str = Field(foreign_key="capabilities.code", primary_key=True)
    quota: Optional[int] = None  # per period; None = unlimited (quota kind) or n/a (credits kind)
    period: str = "day"  # day | month | none
    max_input_seconds: Optional[int] = None
    variants: Optional[list] = Field(default=None, sa_column=Column(JSON))
    default_variant: Optional[str] = None


class CreditPack(SQLModel, table=True):
    __tablename__ = "credit_packs"
    lookup_key: str = Field(primary_key=True)
    capability_code: str = Field(foreign_key="capabilities.code")
    credits: int


class Subscription(SQLModel, table=True):
    __tablename__ = "subscriptions"
    user_id: int = Field(foreign_key="users.id", primary_key=True)
    plan_id: int = Field(foreign_key="plans.id")
    status: str = "active"
    stripe_subscription_id: Optional[str] = Field(default=None, unique=True)
    current_period_end: Optional[datetime] = None
    last_event_created: int = 0  # unix seconds of the newest Stripe event applied
    updated_at: datetime = Field(default_factory=utcnow)


class UsageCounter(SQLModel, table=True):
    __tablename__ = "usage_counters"
    __table_args__ = (CheckConstraint("used >= 0", name="used_non_negative"),)
    user_id: int = Field(foreign_key="users.id", primary_key=True)
    capability_code: str = Field(primary_key=True)
    period_start: date = Field(primary_key=True)
    used: int = 0


class CreditBalance(SQLModel, table=True):
    __tablename__ = "credit_balances"
    __table_args__ = (CheckConstraint("balance >= 0", name="balance_non_negative"),)
    user_id: int = Field(foreign_key="users.id", primary_key=True)
    capability_code: str = Field(primary_key=True)
    balance: int = 0


class CreditLedger(SQLModel, table=True):
    """Append-only: every change of a balance is a row; sum(delta) equals the balance."""

    __tablename__ = "credit_ledger"
    __table_args__ = (UniqueConstraint("reason", "source_ref", name="one_entry_per_source"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    capability_code: str
    delta: int
    reason: str  # grant | purchase | consume | refund
    source_ref: str
    usage_event_id: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)


class UsageEvent(SQLModel, table=True):
    """A reservation: reserved → committed (job done) | released (refunded), each by CAS."""

    __tablename__ = "usage_events"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="one_event_per_idempotency_key"),
        Index("ix_usage_events_sweep", "status", "expires_at"),
    )
    id: str = Field(primary_key=True)
    user_id: int = Field(foreign_key="users.id", index=True)
    capability_code: str  # what was asked for
    charged_capability: str  # whose counter or balance paid
    source: str  # quota | unlimited | credits
    amount: int
    period_start: Optional[date] = None
    status: str = "reserved"
    idempotency_key: Optional[str] = None
    fingerprint: Optional[str] = None
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: datetime
    settled_at: Optional[datetime] = None
    release_reason: Optional[str] = None


class StripeEvent(SQLModel, table=True):
    __tablename__ = "stripe_events"
    event_id: str = Field(primary_key=True)
    type: str
    created: int
    outcome: str = ""
    processed_at: datetime = Field(default_factory=utcnow)
