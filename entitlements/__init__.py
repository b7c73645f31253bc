"""Plans, capabilities, API keys and the usage ledger (SQLModel); knows nothing about audio."""

from .db import data_dir, init_db, make_engine
from .errors import (CapabilityDenied, EntitlementError, IdempotencyMismatch, OutOfCredits, PlanLimitExceeded,
                     QuotaExceeded, Unauthorized)
from .ledger import Caller, Decision, authorize_and_consume, extend, peek, settle, settle_in, state, sweep

__all__ = [
    "Caller", "CapabilityDenied", "Decision", "EntitlementError", "IdempotencyMismatch", "OutOfCredits",
    "PlanLimitExceeded", "QuotaExceeded", "Unauthorized", "authorize_and_consume", "data_dir", "extend",
    "init_db", "make_engine", "peek", "settle", "settle_in", "state", "sweep",
]


def open_database(url: str | None = None, sync_plans: bool = True):
    """An engine with tables created, the schema version checked and the plans synced."""
    import time

    from sqlalchemy.exc import IntegrityError, OperationalError

    from . import plans

    engine = make_engine(url)
    for attempt in range(3):
        try:  # replicas starting together may race to create tables and rows; the loser retries
            init_db(engine)
            if sync_plans:
                plans.sync(engine)
            return engine
        except (IntegrityError, OperationalError):
            if attempt == 2:
                raise
            time.sleep(0.5 * (attempt + 1))
    return engine
