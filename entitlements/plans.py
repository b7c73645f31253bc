"""Plans, capabilities and credit packs from configs/plans.yaml, synced into the database."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from sqlalchemy.engine import Engine
from sqlmodel import Session, delete, select

from .schema import Capability, CreditPack, Plan, PlanCapability

PRIORITIES = ("high", "normal", "low")
MODES = ("cpu_only", "gpu_allowed")
PERIODS = ("day", "month", "none")


def plans_file() -> Path:
    env = os.environ.get("LOCOSERVE_PLANS")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "configs" / "plans.yaml"


def load(path: Path | None = None) -> dict:
    data = yaml.safe_load(Path(path or plans_file()).read_text())
    for code, cap in data["capabilities"].items():
        if cap["kind"] not in ("quota", "credits"):
            raise ValueError(f"capability {code}: kind must be quota or credits")
        if cap.get("covers") and cap["covers"] not in data["capabilities"]:
            raise ValueError(f"capability {code} covers unknown capability {cap['covers']}")
    for code, plan in data["plans"].items():
        if plan["priority"] not in PRIORITIES or plan["execution_mode"] not in MODES:
            raise ValueError(f"plan {code}: priority must be one of {PRIORITIES}, mode one of {MODES}")
        for cap, limits in plan["capabilities"].items():
            if cap not in data["capabilities"]:
                raise ValueError(f"plan {code} lists unknown capability {cap}")
            if limits.get("period", "day") not in PERIODS:
                raise ValueError(f"plan {code}/{cap}: period must be one of {PERIODS}")
    if data.get("default_plan") not in data["plans"]:
        raise ValueError("default_plan must name a plan")
    return data


def sync(engine: Engine, path: Path | None = None) -> dict:
    """Make the database's plans, capabilities and packs match the YAML (idempotent)."""
    data = load(path)
    with Session(engine) as s, s.begin():
        for code, cap in data["capabilities"].items():
            s.merge(Capability(code=code, kind=cap["kind"], covers=cap.get("covers"),
                               description=cap.get("description", "")))
        for code, spec in data["plans"].items():
            plan = s.exec(select(Plan).where(Plan.code == code)).first() or Plan(code=code, name=code,
                                                                               execution_mode="cpu_only",
                                                                               priority="low")
            plan.name, plan.execution_mode, plan.priority = spec["name"], spec["execution_mode"], spec["priority"]
            plan.stripe_price_lookup_key, plan.active = spec.get("stripe_price"), True
            s.add(plan)
            s.flush()
            s.exec(delete(PlanCapability).where(PlanCapability.plan_id == plan.id))
            for cap, limits in spec["capabilities"].items():
                s.add(PlanCapability(plan_id=plan.id, capability_code=cap, quota=limits.get("quota"),
                                     period=limits.get("period", "day" if data["capabilities"][cap]["kind"] == "quota" else "none"),
                                     max_input_seconds=limits.get("max_input_seconds"),
                                     variants=limits.get("variants"), default_variant=limits.get("default_variant")))
        for plan in s.exec(select(Plan)).all():
            if plan.code not in data["plans"]:
                plan.active = False  # kept for history and existing subscribers, not offered
                s.add(plan)
        for key, pack in data.get("credit_packs", {}).items():
            s.merge(CreditPack(lookup_key=key, capability_code=pack["capability"], credits=pack["credits"]))
    return data


def plan_by_code(s: Session, code: str) -> Plan:
    plan = s.exec(select(Plan).where(Plan.code == code)).first()
    if plan is None:
        raise ValueError(f"unknown plan {code!r}")
    return plan


def default_plan_code(path: Path | None = None) -> str:
    return load(path)["default_plan"]
