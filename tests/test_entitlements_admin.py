"""The admin CLI against a real SQLite file (and PostgreSQL where set), its error paths as an
operator meets them, and tiers as data."""

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import PLANS
from entitlements import authorize_and_consume, plans


def run(tmp_path, *args, env=None, cwd=None):
    base = {"LOCOSERVE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
            "LOCOSERVE_PLANS": str(tmp_path / "plans.yaml")}
    return subprocess.run([sys.executable, "-m", "serve_app.cli", *args], capture_output=True, text=True,
                          env={**base, **(env or {})}, cwd=cwd)


def cli(tmp_path, *args):
    r = run(tmp_path, *args)
    assert r.returncode == 0, r.stderr
    return r.stdout


def refused(tmp_path, *args, env=None, cwd=None) -> str:
    """The command fails with exit status 1 and exactly one line on stderr, no traceback."""
    r = run(tmp_path, *args, env=env, cwd=cwd)
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("locoserve: ") and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def test_admin_commands(tmp_path):
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))
    assert "database ready" in cli(tmp_path, "db", "init")
    out = cli(tmp_path, "users", "create", "ann@x", "--plan", "pro")
    key = out.strip().split()[-1]
    assert key.startswith("lsk_")
    cli(tmp_path, "credits", "grant", "ann@x", "stem_split_single", "3")
    usage = json.loads(cli(tmp_path, "usage", "show", "ann@x", "--json"))
    assert usage["plan"] == "pro" and usage["capabilities"]["stem_split"]["limit"] == 200
    assert "pro" in cli(tmp_path, "plans", "list")
    assert "revoked 1" in cli(tmp_path, "keys", "revoke", key[:12])
    assert (tmp_path / "data" / "locoserve.db").exists()


def test_a_new_plan_is_a_row_not_code(db, tmp_path):
    data = yaml.safe_load(yaml.safe_dump(PLANS))
    data["plans"]["studio"] = {"name": "Studio", "execution_mode": "gpu_allowed", "priority": "high",
                               "stripe_price": "studio_yearly",
                               "capabilities": {"stem_split": {"quota": 1000, "period": "month"}}}
    path = tmp_path / "more.yaml"
    path.write_text(yaml.safe_dump(data))
    plans.sync(db, path)
    plans.sync(db, path)  # idempotent
    from entitlements.accounts import create_user
    _, key = create_user(db, "s@x", "studio")
    d = authorize_and_consume(db, "stem_split", api_key=key)
    assert (d.limit, d.window_s is not None, d.priority) == (1000, True, "high")


def test_admin_errors_are_one_line_with_what_to_do(tmp_path):
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))
    # no database yet: said, with the way out, and nothing is created
    line = refused(tmp_path, "users", "list")
    assert "no database at" in line and "locoserve db init" in line and "LOCOSERVE_DATA_DIR" in line
    assert not (tmp_path / "data").exists()
    # and from another folder without LOCOSERVE_DATA_DIR: ./data of that folder, not created either
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("LOCOSERVE_DATA_DIR", "DATABASE_URL")}
    r = subprocess.run([sys.executable, "-m", "serve_app.cli", "usage", "show", "ann@x"], capture_output=True,
                       text=True, cwd=elsewhere, env={**env, "PYTHONPATH": os.getcwd()})
    assert r.returncode == 1 and str(elsewhere / "data" / "locoserve.db") in r.stderr
    assert not (elsewhere / "data").exists()

    assert "(created)" in cli(tmp_path, "db", "init")
    key = cli(tmp_path, "users", "create", "ann@x", "--plan", "pro").split()[-1]
    assert "already exists (plan pro)" in refused(tmp_path, "users", "create", "ann@x")
    assert "unknown plan 'gold'; plans: credits_only, free, pro, vip" in refused(
        tmp_path, "users", "create", "bob@x", "--plan", "gold")
    assert "unknown plan 'gold'" in refused(tmp_path, "users", "plan", "ann@x", "gold")
    for args in (["users", "plan", "nobody@x", "pro"], ["keys", "create", "nobody@x"], ["keys", "list", "nobody@x"],
                 ["usage", "show", "nobody@x"], ["credits", "grant", "nobody@x", "stem_split_single", "1"]):
        assert "no user nobody@x; `locoserve users list`" in refused(tmp_path, *args)
    line = refused(tmp_path, "credits", "grant", "ann@x", "stem_split", "5")
    assert "stem_split is counted by its plan quota and cannot hold credits" in line and "stem_split_single" in line
    assert "unknown capability 'karaoke'" in refused(tmp_path, "credits", "grant", "ann@x", "karaoke", "5")
    assert "positive" in refused(tmp_path, "credits", "grant", "ann@x", "stem_split_single", "0")
    assert "no active key shows as 'lsk_nothing1'" in refused(tmp_path, "keys", "revoke", "lsk_nothing1")
    assert "user ann@x" not in cli(tmp_path, "users", "list", "--plan", "free")
    assert key[:12] in cli(tmp_path, "keys", "list", "ann@x")


def test_lists_credits_and_unlimited(tmp_path):
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))
    cli(tmp_path, "db", "init")
    first = cli(tmp_path, "users", "create", "ann@x", "--plan", "pro").split()[-1]
    second = cli(tmp_path, "keys", "create", "ann@x", "--name", "laptop").strip()
    cli(tmp_path, "users", "create", "vic@x", "--plan", "vip")
    cli(tmp_path, "keys", "revoke", first[:12])

    users = cli(tmp_path, "users", "list").splitlines()
    assert users[0].split() == ["email", "plan", "keys", "created"]
    assert users[1].split()[:3] == ["ann@x", "pro", "1"] and users[2].split()[:3] == ["vic@x", "vip", "1"]
    keys = cli(tmp_path, "keys", "list", "ann@x")
    assert first not in keys and second not in keys  # prefixes only: the keys are never shown again
    assert f"{first[:12]}  revoked" in keys and f"{second[:12]}  active" in keys and "laptop" in keys

    # a credit grant is visible, also where the plan does not spend that capability
    cli(tmp_path, "users", "create", "fay@x", "--plan", "free")
    out = cli(tmp_path, "credits", "grant", "fay@x", "stem_split_single", "3")
    assert "balance 3" in out and "note" not in out
    assert "balance 4" in cli(tmp_path, "credits", "grant", "fay@x", "stem_split_single", "1")
    out = cli(tmp_path, "credits", "grant", "vic@x", "stem_split_single", "2")
    assert "balance 2" in out and "the vip plan does not spend stem_split_single credits" in out
    fay = cli(tmp_path, "usage", "show", "fay@x")
    assert "stem_split_single  credits: balance 4 (pays for stem_split)" in fay
    assert "0 of 5 used this day, 5 left until" in fay
    vic = cli(tmp_path, "usage", "show", "vic@x")
    assert "stem_split         unlimited (0 used this day)" in vic and "None" not in vic
    assert "stem_split_single  credits: balance 2 (not spent on the vip plan)" in vic
    assert json.loads(cli(tmp_path, "usage", "show", "vic@x", "--json"))["credits"] == {"stem_split_single": 2}
    plans_out = cli(tmp_path, "plans", "list")
    assert "unlimited" in plans_out and "None" not in plans_out and "200/day" in plans_out


def test_postgres_without_tables_or_server(tmp_path):
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        pytest.skip("PostgreSQL case: set TEST_DATABASE_URL")
    from sqlmodel import SQLModel

    from entitlements import make_engine

    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))
    engine = make_engine(url)
    SQLModel.metadata.drop_all(engine)
    engine.dispose()
    assert "has no Locoserve tables" in refused(tmp_path, "users", "list", env={"DATABASE_URL": url})
    assert "database ready" in run(tmp_path, "db", "init", env={"DATABASE_URL": url}).stdout
    assert "no users" in run(tmp_path, "users", "list", env={"DATABASE_URL": url}).stdout
    line = refused(tmp_path, "users", "list", env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/none"})
    assert "cannot use the database at 127.0.0.1:1/none" in line and "DATABASE_URL" in line
