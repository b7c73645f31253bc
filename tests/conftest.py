import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import os

import pytest
import yaml

PLANS = {
    "capabilities": {
        "stem_split": {"kind": "quota"},
        "stem_split_single": {"kind": "credits", "covers": "stem_split"},
        "audio_clean": {"kind": "quota"},
        "audio_enhance": {"kind": "quota"},
    },
    "plans": {
        "free": {"name": "Free", "execution_mode": "cpu_only", "priority": "low", "stripe_price": None,
                 "capabilities": {
                     "stem_split": {"quota": 5, "period": "day", "max_input_seconds": 600, "variants": ["2stem"]},
                     "stem_split_single": {"max_input_seconds": 600, "variants": ["2stem"]},
                     "audio_clean": {"quota": 2, "period": "day"}}},
        "pro": {"name": "Pro", "execution_mode": "gpu_allowed", "priority": "normal", "stripe_price": "pro_monthly",
                "capabilities": {
                    "stem_split": {"quota": 200, "period": "day", "max_input_seconds": 1800,
                                   "variants": ["2stem", "5stem"]},
                    "audio_clean": {"quota": 100, "period": "day"}}},
        "vip": {"name": "VIP", "execution_mode": "gpu_allowed", "priority": "high", "stripe_price": "vip_monthly",
                "capabilities": {"stem_split": {"quota": None, "max_input_seconds": 3600}}},
        "credits_only": {"name": "Credits", "execution_mode": "cpu_only", "priority": "low", "stripe_price": None,
                         "capabilities": {"stem_split_single": {"max_input_seconds": 600}}},
    },
    "credit_packs": {"single_split_10": {"capability": "stem_split_single", "credits": 10}},
    "default_plan": "free",
}


def _postgres_url() -> str | None:
    return os.environ.get("TEST_DATABASE_URL")


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path, monkeypatch):
    """A fresh database with the test plans: a SQLite file, or PostgreSQL from TEST_DATABASE_URL."""
    from sqlmodel import SQLModel

    import serve_app.jobs  # noqa: F401  (its table refers to users: drop_all must know it)
    from entitlements import plans
    from entitlements.db import init_db, make_engine

    plans_file = tmp_path / "plans.yaml"
    plans_file.write_text(yaml.safe_dump(PLANS))
    monkeypatch.setenv("LOCOSERVE_PLANS", str(plans_file))
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}", pool_size=50)
    else:
        url = _postgres_url()
        if not url:
            pytest.skip("PostgreSQL case: set TEST_DATABASE_URL (e.g. postgresql://postgres@127.0.0.1:5432/test)")
        engine = make_engine(url, pool_size=50)
        try:
            with engine.connect():
                pass
        except Exception as e:  # noqa: BLE001
            pytest.skip(f"PostgreSQL at TEST_DATABASE_URL is not reachable: {e}")
        SQLModel.metadata.drop_all(engine)
    init_db(engine)
    plans.sync(engine, plans_file)
    engine.test_kind = request.param
    yield engine
    engine.dispose()
