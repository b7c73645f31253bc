"""Admin commands: `locoserve db init | users create/plan/list | keys create/list/revoke |
credits grant | plans list | usage show`.

They find the database as the service does: DATABASE_URL when set, else the SQLite file in
the data folder (./data, or LOCOSERVE_DATA_DIR). Only `db init` creates one: any other
command run where there is none says where it looked and what to do, instead of silently
making an empty database there. Every error is one line, `locoserve: what happened; what to
do`, and exit status 1 (2 for a usage error); LOCOSERVE_DEBUG=1 adds the traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import traceback
from pathlib import Path


class AdminError(Exception):
    """A one-line answer for the operator: what happened, and what to do."""


def _where(url: str) -> str:
    """The database as people name it, never with its password."""
    if url.startswith("sqlite"):
        return str(Path(url.split("///", 1)[-1]).resolve())
    return url.split("@")[-1]


def _engine(create: bool = False):
    """The service's database, checked; created only when `create` (db init)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import OperationalError

    from . import open_database
    from .db import SchemaMismatch, data_dir, database_url, make_engine

    url = database_url()
    where = _where(url)
    how = ("run it where the service runs, set LOCOSERVE_DATA_DIR (or DATABASE_URL) to the service's, "
           "or create a database with `locoserve db init`")
    if url.startswith("sqlite") and not create and not Path(where).is_file():
        source = "LOCOSERVE_DATA_DIR" if os.environ.get("LOCOSERVE_DATA_DIR") else "the data folder ./data"
        raise AdminError(f"no database at {where} ({source}, {data_dir().resolve()}); {how}")
    try:
        if not create:
            probe = make_engine(url, pool_size=1)
            try:
                if not inspect(probe).has_table("schema_info"):
                    raise AdminError(f"the database at {where} has no Locoserve tables; {how}")
            finally:
                probe.dispose()
        return open_database(url)
    except OperationalError as e:
        reason = str(e.orig).strip().splitlines()[0] if e.orig else str(e).splitlines()[0]
        raise AdminError(f"cannot use the database at {where}: {reason}; check DATABASE_URL "
                         f"and that the server runs") from None
    except SchemaMismatch as e:
        raise AdminError(str(e)) from None


def admin(func):
    """Run a command; turn every expected failure into one line and exit status 1."""

    @functools.wraps(func)
    def run(args) -> int:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            return func(args)
        except AdminError as e:
            print(f"locoserve: {e}", file=sys.stderr)
        except SQLAlchemyError as e:
            first = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            print(f"locoserve: the database refused the change: {first}", file=sys.stderr)
        except Exception as e:  # a bug of ours: still one line, the traceback on request
            if os.environ.get("LOCOSERVE_DEBUG"):
                traceback.print_exc()
            print(f"locoserve: internal error: {type(e).__name__}: {e}"
                  f"{'' if os.environ.get('LOCOSERVE_DEBUG') else ' (LOCOSERVE_DEBUG=1 shows the traceback)'}",
                  file=sys.stderr)
        return 1

    return run


# -- lookups that explain themselves ------------------------------------------------------------

def _user(s, email: str):
    from sqlmodel import select

    from .schema import User

    user = s.exec(select(User).where(User.email == email)).first()
    if user is None:
        raise AdminError(f"no user {email}; `locoserve users list` shows who there is")
    return user


def _plan(s, code: str):
    from sqlmodel import select

    from .schema import Plan

    plan = s.exec(select(Plan).where(Plan.code == code, Plan.active)).first()
    if plan is None:
        codes = ", ".join(p.code for p in s.exec(select(Plan).where(Plan.active).order_by(Plan.code)).all())
        raise AdminError(f"unknown plan {code!r}; plans: {codes} (`locoserve plans list` shows their limits)")
    return plan


def _quota_text(limit, period: str | None, used: int | None = None) -> str:
    per = f"/{period}" if period and period != "none" else ""
    if limit is None:
        return f"unlimited{f' ({used} used this {period})' if used is not None and per else ''}"
    if used is None:
        return f"{limit}{per}"
    return f"{used} of {limit} used this {period}" if per else f"{used} of {limit} used"


# -- commands -----------------------------------------------------------------------------------

@admin
def _db_init(args) -> int:
    from .db import database_url

    url = database_url()
    existed = not url.startswith("sqlite") or Path(_where(url)).is_file()
    _engine(create=True)
    print(f"database ready: {_where(url)}{' (plans synced)' if existed else ' (created)'}")
    return 0


@admin
def _users_create(args) -> int:
    from sqlmodel import Session, select

    from .accounts import create_user
    from .schema import Plan, Subscription, User

    engine = _engine()
    with Session(engine) as s:
        existing = s.exec(select(User).where(User.email == args.email)).first()
        if existing is not None:
            sub = s.get(Subscription, existing.id)
            plan = s.get(Plan, sub.plan_id) if sub else None
            raise AdminError(f"user {args.email} already exists (plan {plan.code if plan else '-'}); "
                             f"`locoserve keys create {args.email}` gives them another key")
        if args.plan:
            _plan(s, args.plan)
    user, key = create_user(engine, args.email, args.plan, args.stripe_customer)
    print(f"created {user.email} on {args.plan or 'the default plan'}")
    print(f"API key (shown once, store it now): {key}")
    return 0


@admin
def _users_plan(args) -> int:
    from sqlmodel import Session

    from .accounts import set_plan

    with Session(_engine()) as s, s.begin():
        user = _user(s, args.email)
        _plan(s, args.plan)
        set_plan(s, user, args.plan)
    print(f"{args.email} is now on {args.plan}")
    return 0


@admin
def _users_list(args) -> int:
    from sqlalchemy import func
    from sqlmodel import Session, select

    from .schema import ApiKey, Plan, Subscription, User

    with Session(_engine()) as s:
        active = (select(ApiKey.user_id, func.count().label("n")).where(ApiKey.revoked_at.is_(None))
                  .group_by(ApiKey.user_id).subquery())
        query = (select(User.email, Plan.code, func.coalesce(active.c.n, 0), User.created_at)
                 .join(Subscription, Subscription.user_id == User.id, isouter=True)
                 .join(Plan, Plan.id == Subscription.plan_id, isouter=True)
                 .join(active, active.c.user_id == User.id, isouter=True).order_by(User.email))
        if args.plan:
            query = query.where(Plan.code == args.plan)
        rows = s.exec(query).all()
    if not rows:
        print("no users" + (f" on {args.plan}" if args.plan else "") + "; `locoserve users create EMAIL` adds one")
        return 0
    width = max(len("email"), *(len(r[0]) for r in rows))
    print(f"{'email':{width}}  {'plan':6}  {'keys':>4}  created")
    for email, plan, n, created in rows:
        print(f"{email:{width}}  {plan or '-':6}  {n:>4}  {created:%Y-%m-%d}")
    return 0


@admin
def _keys_create(args) -> int:
    from sqlmodel import Session

    from . import keys

    with Session(_engine()) as s, s.begin():
        key, _ = keys.issue(s, _user(s, args.email), args.name)
    print(key)
    return 0


@admin
def _keys_list(args) -> int:
    from sqlmodel import Session, select

    from .schema import ApiKey, utcnow

    now = utcnow()
    with Session(_engine()) as s:
        user = _user(s, args.email)
        rows = s.exec(select(ApiKey).where(ApiKey.user_id == user.id).order_by(ApiKey.created_at)).all()
    if not rows:
        print(f"{args.email} has no keys; `locoserve keys create {args.email}` makes one")
        return 0
    print(f"{'prefix':12}  {'status':8}  {'created':10}  {'last used':10}  name")
    for k in rows:  # the display prefix only: the key itself is never stored
        expired = k.expires_at is not None and k.expires_at.replace(tzinfo=now.tzinfo) <= now
        status = "revoked" if k.revoked_at else "expired" if expired else "active"
        used = f"{k.last_used_at:%Y-%m-%d}" if k.last_used_at else "never"
        print(f"{k.display_prefix:12}  {status:8}  {k.created_at:%Y-%m-%d}  {used:10}  {k.name}")
    return 0


@admin
def _keys_revoke(args) -> int:
    from .accounts import revoke_key

    n = revoke_key(_engine(), args.prefix)
    if not n:
        raise AdminError(f"no active key shows as {args.prefix!r}; `locoserve keys list EMAIL` shows a user's "
                         f"key prefixes (12 characters, e.g. lsk_AbCdEfGh)")
    print(f"revoked {n} key(s)")
    return 0


@admin
def _keys_webhook_secret(args) -> int:
    from sqlmodel import Session

    from serve_app.webhooks import WebhookSecret, secret_for

    engine = _engine()
    WebhookSecret.__table__.create(engine, checkfirst=True)  # a database the service has not opened yet
    with Session(engine) as s:
        user_id = _user(s, args.email).id
    print(secret_for(engine, user_id, rotate=args.rotate))
    if args.rotate:
        print("rotated: webhooks are signed with this secret from now on; the old one no longer verifies",
              file=sys.stderr)
    return 0


@admin
def _credits_grant(args) -> int:
    import uuid

    from sqlmodel import Session, select

    from .ledger import add_credits, current_plan
    from .schema import Capability, CreditBalance, PlanCapability

    if args.amount <= 0:
        raise AdminError(f"grant a positive number of credits, not {args.amount}")
    with Session(_engine(), expire_on_commit=False) as s, s.begin():
        user = _user(s, args.email)
        cap = s.get(Capability, args.capability)
        holders = [c.code for c in s.exec(select(Capability).where(Capability.kind == "credits")).all()]
        if cap is None or cap.kind != "credits":
            what = (f"{args.capability} is counted by its plan quota and cannot hold credits" if cap
                    else f"unknown capability {args.capability!r}")
            raise AdminError(f"{what}; capabilities that hold credits: {', '.join(holders) or 'none'}")
        add_credits(s, user.id, cap.code, args.amount, "grant", uuid.uuid4().hex)
        s.flush()
        balance = s.get(CreditBalance, (user.id, cap.code)).balance
        plan = current_plan(s, user)
        usable = s.get(PlanCapability, (plan.id, cap.code)) is not None
    print(f"granted {args.amount} {cap.code} credits to {args.email}; balance {balance}")
    if not usable:
        print(f"note: the {plan.code} plan does not spend {cap.code} credits; they stay on the account "
              f"for a plan that does")
    return 0


@admin
def _plans_list(args) -> int:
    from . import plans

    try:
        data = plans.load()
    except (OSError, ValueError, KeyError) as e:
        raise AdminError(f"cannot read the plans file {plans.plans_file()}: {e}") from None
    for code, plan in data["plans"].items():
        print(f"{code:6} {plan['name']:6} mode={plan['execution_mode']:11} priority={plan['priority']}")
        for cap, lim in plan["capabilities"].items():
            if data["capabilities"][cap]["kind"] == "credits":
                count = "credits"
            else:
                count = _quota_text(lim.get("quota"), lim.get("period", "day"))
            variants = ", ".join(lim["variants"]) if lim.get("variants") else "-"
            longest = f"{lim['max_input_seconds']} s" if lim.get("max_input_seconds") else "-"
            print(f"    {cap:18} {count:>10}  max input {longest:>6}  variants {variants}")
    return 0


@admin
def _usage_show(args) -> int:
    from sqlmodel import Session

    from .ledger import state

    engine = _engine()
    with Session(engine) as s:
        user_id = _user(s, args.email).id
    data = state(engine, user_id)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"{data['user']}: plan {data['plan_name']} ({data['plan']}), {data['execution_mode']}, "
          f"priority {data['priority']}")
    for code, c in data["capabilities"].items():
        if c["kind"] == "quota":
            count = _quota_text(c["limit"], c["period"], c["used"])
            if c["limit"] is not None and c["period"] != "none":
                count += f", {c['remaining']} left until {c['reset_at']}"
        else:
            pays = f" (pays for {c['covers']})" if c.get("covers") else ""
            count = f"credits: balance {c['balance']}{pays}"
        print(f"    {code:18} {count}")
    outside = {k: v for k, v in data["credits"].items() if k not in data["capabilities"]}
    for code, balance in outside.items():
        print(f"    {code:18} credits: balance {balance} (not spent on the {data['plan']} plan)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("init", help="create the database (or its missing tables) and sync plans from "
                               "configs/plans.yaml").set_defaults(func=_db_init)

    users = sub.add_parser("users", help="users").add_subparsers(dest="users_cmd", required=True)
    p = users.add_parser("create", help="create a user and print their API key once")
    p.add_argument("email")
    p.add_argument("--plan", help="plan code (default: the default plan)")
    p.add_argument("--stripe-customer", help="link a Stripe customer id")
    p.set_defaults(func=_users_create)
    p = users.add_parser("plan", help="move a user to another plan")
    p.add_argument("email")
    p.add_argument("plan")
    p.set_defaults(func=_users_plan)
    p = users.add_parser("list", help="users, their plan and how many active keys they have")
    p.add_argument("--plan", help="only users on this plan")
    p.set_defaults(func=_users_list)

    ks = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    p = ks.add_parser("create", help="another key for a user (printed once)")
    p.add_argument("email")
    p.add_argument("--name", default="")
    p.set_defaults(func=_keys_create)
    p = ks.add_parser("list", help="a user's keys: display prefixes and status, never the keys")
    p.add_argument("email")
    p.set_defaults(func=_keys_list)
    p = ks.add_parser("revoke", help="revoke by display prefix (the key's first 12 characters)")
    p.add_argument("prefix")
    p.set_defaults(func=_keys_revoke)
    p = ks.add_parser("webhook-secret", help="the secret that signs a user's job webhooks (Locoserve-Signature); "
                                             "made on first use")
    p.add_argument("email")
    p.add_argument("--rotate", action="store_true", help="replace it (the old one stops verifying at once)")
    p.set_defaults(func=_keys_webhook_secret)

    cr = sub.add_parser("credits", help="credits").add_subparsers(dest="credits_cmd", required=True)
    p = cr.add_parser("grant", help="grant credits of a credits capability (recorded in the ledger)")
    p.add_argument("email")
    p.add_argument("capability")
    p.add_argument("amount", type=int)
    p.set_defaults(func=_credits_grant)

    pl = sub.add_parser("plans", help="plans").add_subparsers(dest="plans_cmd", required=True)
    pl.add_parser("list", help="plans and their limits").set_defaults(func=_plans_list)

    us = sub.add_parser("usage", help="usage").add_subparsers(dest="usage_cmd", required=True)
    p = us.add_parser("show", help="a user's plan, what is used and left of each quota, and every credit balance")
    p.add_argument("email")
    p.add_argument("--json", action="store_true", help="the same as GET /api/me, as JSON")
    p.set_defaults(func=_usage_show)
