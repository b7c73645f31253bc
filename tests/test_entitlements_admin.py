"""The admin CLI against a real SQLite file, and tiers as data."""

import json
import subprocess
import sys

import yaml

from conftest import PLANS
from entitlements import authorize_and_consume, plans


def cli(tmp_path, *args):
    env = {"LOCOSERVE_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin",
           "LOCOSERVE_PLANS": str(tmp_path / "plans.yaml")}
    return subprocess.run([sys.executable, "-m", "serve_app.cli", *args], capture_output=True, text=True,
                          env=env, check=True).stdout


def test_admin_commands(tmp_path):
    (tmp_path / "plans.yaml").write_text(yaml.safe_dump(PLANS))
    assert "database ready" in cli(tmp_path, "db", "init")
    out = cli(tmp_path, "users", "create", "ann@x", "--plan", "pro")
    key = out.strip().split()[-1]
    assert key.startswith("lsk_")
    cli(tmp_path, "credits", "grant", "ann@x", "stem_split_single", "3")
    usage = json.loads(cli(tmp_path, "usage", "show", "ann@x"))
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
