"""API keys: `lsk_` + 256 random bits (URL-safe base64). Only SHA-256(key) is stored; a fast
hash is enough for keys with this much entropy, and unlike a salted password hash it can be
looked up by index. The first 12 characters are kept as a display prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from .errors import Unauthorized
from .schema import ApiKey, Plan, Subscription, User, utcnow

PREFIX = "lsk_"
DISPLAY = 12
TOUCH_EVERY_S = 60  # last_used_at is refreshed at most once a minute, not on every request


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def issue(s: Session, user: User, name: str = "", expires_at: datetime | None = None) -> tuple[str, ApiKey]:
    """Create a key for `user`; returns (plaintext, row). The plaintext is never stored."""
    key = new_key()
    row = ApiKey(user_id=user.id, key_hash=hash_key(key), display_prefix=key[:DISPLAY], name=name,
                 expires_at=expires_at)
    s.add(row)
    s.flush()
    return key, row


@dataclass(frozen=True)
class Account:
    """A caller as the ledger needs it: the user and their current plan, from one query."""

    user_id: int
    email: str
    plan_id: int
    plan: str
    plan_name: str
    execution_mode: str
    priority: str


ACCOUNT_COLUMNS = (User.id, User.email, Plan.id, Plan.code, Plan.name, Plan.execution_mode, Plan.priority)


def account_query():
    return (select(*ACCOUNT_COLUMNS).select_from(User)
            .join(Subscription, Subscription.user_id == User.id).join(Plan, Plan.id == Subscription.plan_id))


def resolve(s: Session, key: str | None, now: datetime | None = None) -> Account:
    """The account behind an active key, or Unauthorized (unknown, revoked or expired alike)."""
    now = now or utcnow()
    if not key or not key.startswith(PREFIX):
        raise Unauthorized("send 'Authorization: Bearer <api key>'")
    digest = hash_key(key)
    row = s.execute(account_query().add_columns(ApiKey.id, ApiKey.key_hash, ApiKey.revoked_at, ApiKey.expires_at,
                                                ApiKey.last_used_at)
                    .join(ApiKey, ApiKey.user_id == User.id).where(ApiKey.key_hash == digest)).first()
    if row is None or not hmac.compare_digest(row.key_hash, digest):
        raise Unauthorized("unknown API key")
    if row.revoked_at is not None:
        raise Unauthorized("this API key was revoked")
    if row.expires_at is not None and row.expires_at <= now:
        raise Unauthorized("this API key has expired")
    if row.last_used_at is None or row.last_used_at < now - timedelta(seconds=TOUCH_EVERY_S):
        s.execute(update(ApiKey).where(ApiKey.id == row[7]).values(last_used_at=now)
                  .execution_options(synchronize_session=False))
    return Account(*row[:7])


def revoke(s: Session, prefix: str, now: datetime | None = None) -> int:
    """Revoke the active keys shown as `prefix` (the 12-character display prefix)."""
    rows = s.exec(select(ApiKey).where(ApiKey.display_prefix == prefix, ApiKey.revoked_at.is_(None))).all()
    for row in rows:
        row.revoked_at = now or utcnow()
        s.add(row)
    return len(rows)
