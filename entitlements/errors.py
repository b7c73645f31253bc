"""Typed denials. Each carries what an RFC 9457 problem document needs (status, type slug,
title, detail, extension members) and any HTTP headers, as plain data: the HTTP layer only
serializes them."""

from __future__ import annotations

from datetime import datetime, timezone


class EntitlementError(Exception):
    status = 400
    slug = "bad-request"
    title = "Bad request"

    def __init__(self, detail: str, **extra):
        super().__init__(detail)
        self.detail = detail
        self.extra = extra
        self.headers: dict[str, str] = {}


class Unauthorized(EntitlementError):
    status, slug, title = 401, "unauthorized", "Missing, unknown, expired or revoked API key"


class CapabilityDenied(EntitlementError):
    status, slug, title = 403, "capability-not-in-plan", "Your plan does not include this capability"


class PlanLimitExceeded(EntitlementError):
    status, slug, title = 403, "plan-limit", "This request exceeds a limit of your plan"


class OutOfCredits(EntitlementError):
    status, slug, title = 402, "out-of-credits", "Not enough credits"


class IdempotencyMismatch(EntitlementError):
    status, slug, title = 422, "idempotency-key-reused", "Idempotency key reused with a different request"


class QuotaExceeded(EntitlementError):
    status, slug, title = 429, "quota-exceeded", "Quota exhausted for this period"

    def __init__(self, detail: str, *, capability: str, limit: int, used: int, reset_at: datetime | None,
                 now: datetime, window_s: int | None):
        retry = max(1, int((reset_at - now).total_seconds())) if reset_at else None
        super().__init__(detail, capability=capability, limit=limit, used=used, remaining=0,
                         reset_at=reset_at.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")
                         if reset_at else None)
        if retry is not None:
            self.headers["Retry-After"] = str(retry)
        self.headers.update(ratelimit_headers(capability, limit, 0, retry, window_s))


def ratelimit_headers(capability: str, limit: int | None, remaining: int | None,
                      reset_s: int | None, window_s: int | None) -> dict[str, str]:
    """draft-ietf-httpapi-ratelimit-headers: `RateLimit-Policy` and `RateLimit` for a quota."""
    if limit is None or remaining is None:
        return {}
    policy = f'"{capability}";q={limit}' + (f";w={window_s}" if window_s else "")
    state = f'"{capability}";r={remaining}' + (f";t={reset_s}" if reset_s is not None else "")
    return {"RateLimit-Policy": policy, "RateLimit": state}
