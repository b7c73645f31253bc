"""Users, their plan and their credits: what the admin CLI, the demo seeding and the Stripe
webhooks change."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from . import keys, plans
from .ledger import add_credits
from .schema import Subscription, User, utcnow


def get_user(s: Session, email: str) -> User:
    user = s.exec(select(User).where(User.email == email)).first()
    if user is None:
        raise LookupError(f"no user {email}")
    return user


def set_plan(s: Session, user: User, plan_code: str, status: str = "active", **fields) -> Subscription:
    plan = plans.plan_by_code(s, plan_code)
    sub = s.get(Subscription, user.id) or Subscription(user_id=user.id, plan_id=plan.id)
    sub.plan_id, sub.status, sub.updated_at = plan.id, status, utcnow()
    for k, v in fields.items():
        setattr(sub, k, v)
    s.add(sub)
    return sub


def create_user(engine: Engine, email: str, plan_code: str | None = None,
                stripe_customer_id: str | None = None) -> tuple[User, str]:
    """A user on `plan_code` (the default plan if None) with one API key; returns (user, key)."""
    with Session(engine, expire_on_commit=False) as s, s.begin():
        user = User(email=email, stripe_customer_id=stripe_customer_id)
        s.add(user)
        s.flush()
        set_plan(s, user, plan_code or plans.default_plan_code())
        key, _ = keys.issue(s, user, name="default")
        return user, key


def create_key(engine: Engine, email: str, name: str = "", expires_at: datetime | None = None) -> str:
    with Session(engine) as s, s.begin():
        key, _ = keys.issue(s, get_user(s, email), name, expires_at)
        return key


def revoke_key(engine: Engine, prefix: str) -> int:
    with Session(engine) as s, s.begin():
        return keys.revoke(s, prefix)


def grant_credits(engine: Engine, email: str, capability: str, amount: int, source_ref: str | None = None) -> bool:
    with Session(engine) as s, s.begin():
        user = get_user(s, email)
        return add_credits(s, user.id, capability, amount, "grant", source_ref or uuid.uuid4().hex)


def change_plan(engine: Engine, email: str, plan_code: str) -> None:
    with Session(engine) as s, s.begin():
        set_plan(s, get_user(s, email), plan_code)


DEMO_USERS = {"free": "free@demo.locoserve", "pro": "pro@demo.locoserve", "vip": "vip@demo.locoserve"}


def seed_demo_users(engine: Engine, data_dir: Path) -> dict | None:
    """On an empty database, create one demo user per plan and write their keys once to
    data_dir/demo-keys.json as {"free": KEY, "pro": KEY, "vip": KEY}. Returns the keys, or None."""
    with Session(engine) as s:
        if s.exec(select(User)).first() is not None:
            return None
    demo = {plan: create_user(engine, email, plan)[1] for plan, email in DEMO_USERS.items()}
    path = Path(data_dir) / "demo-keys.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(demo, indent=2) + "\n")
    path.chmod(0o600)
    return demo
