"""Admin commands: `locoserve db init | users create | keys create/revoke | credits grant |
plans list | usage show`. They use DATABASE_URL when set, else the SQLite file in the data
folder (./data unless LOCOSERVE_DATA_DIR says otherwise)."""

from __future__ import annotations

import argparse
import json
import sys


def _engine():
    from . import open_database

    return open_database()


def _db_init(args) -> int:
    from .db import database_url

    _engine()
    print(f"database ready: {database_url().split('@')[-1]}")
    return 0


def _users_create(args) -> int:
    from .accounts import create_user

    user, key = create_user(_engine(), args.email, args.plan, args.stripe_customer)
    print(f"created {user.email} on {args.plan or 'the default plan'}")
    print(f"API key (shown once, store it now): {key}")
    return 0


def _users_plan(args) -> int:
    from .accounts import change_plan

    change_plan(_engine(), args.email, args.plan)
    print(f"{args.email} is now on {args.plan}")
    return 0


def _keys_create(args) -> int:
    from .accounts import create_key

    print(create_key(_engine(), args.email, args.name))
    return 0


def _keys_revoke(args) -> int:
    from .accounts import revoke_key

    n = revoke_key(_engine(), args.prefix)
    print(f"revoked {n} key(s)")
    return 0 if n else 1


def _credits_grant(args) -> int:
    from .accounts import grant_credits

    grant_credits(_engine(), args.email, args.capability, args.amount)
    print(f"granted {args.amount} {args.capability} credits to {args.email}")
    return 0


def _plans_list(args) -> int:
    from . import plans

    data = plans.load()
    for code, plan in data["plans"].items():
        print(f"{code:6} {plan['name']:6} mode={plan['execution_mode']:11} priority={plan['priority']}")
        for cap, lim in plan["capabilities"].items():
            quota = lim.get("quota", "credits" if data["capabilities"][cap]["kind"] == "credits" else "unlimited")
            print(f"    {cap:18} {str(quota):>9}/{lim.get('period', 'job')}  max {lim.get('max_input_seconds')} s"
                  f"  variants {lim.get('variants', '-')}")
    return 0


def _usage_show(args) -> int:
    from sqlmodel import Session

    from .accounts import get_user
    from .ledger import state

    engine = _engine()
    with Session(engine) as s:
        user = get_user(s, args.email)
    print(json.dumps(state(engine, user.id), indent=2))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database").add_subparsers(dest="db_cmd", required=True)
    db.add_parser("init", help="create tables and sync plans from configs/plans.yaml").set_defaults(func=_db_init)

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

    ks = sub.add_parser("keys", help="API keys").add_subparsers(dest="keys_cmd", required=True)
    p = ks.add_parser("create", help="another key for a user (printed once)")
    p.add_argument("email")
    p.add_argument("--name", default="")
    p.set_defaults(func=_keys_create)
    p = ks.add_parser("revoke", help="revoke by display prefix (the key's first 12 characters)")
    p.add_argument("prefix")
    p.set_defaults(func=_keys_revoke)

    cr = sub.add_parser("credits", help="credits").add_subparsers(dest="credits_cmd", required=True)
    p = cr.add_parser("grant", help="grant credits (recorded in the ledger)")
    p.add_argument("email")
    p.add_argument("capability")
    p.add_argument("amount", type=int)
    p.set_defaults(func=_credits_grant)

    pl = sub.add_parser("plans", help="plans").add_subparsers(dest="plans_cmd", required=True)
    pl.add_parser("list", help="plans and their limits").set_defaults(func=_plans_list)

    us = sub.add_parser("usage", help="usage").add_subparsers(dest="usage_cmd", required=True)
    p = us.add_parser("show", help="a user's plan, quotas and credits")
    p.add_argument("email")
    p.set_defaults(func=_usage_show)
