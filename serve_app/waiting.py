"""How long a submission waits for its job before answering 202 (issue 12, point 3).

The hosted-API shape: the request says how long it is willing to wait, `Prefer: wait=N`
(RFC 7240) or the form field `wait`, capped by `max_wait_s`; a job that ends in time is
answered with its result, any other with 202, its id and `Location`, and it goes on. A
client that disconnects, or a wait that runs out, never cancels the job: DELETE does.

The form field takes words (`true`: the cap; `false`: 0, answer at once) or seconds;
`Prefer` takes `wait=N` and `respond-async` (= 0). The field wins when both are sent;
neither means the cap, so a plain request behind a proxy's time-out (60 s is common) still
gets an answer, and the job id, before the proxy gives up.
"""

from __future__ import annotations

import math

TRUE = ("true", "yes", "on")
FALSE = ("false", "no", "off")


def parse_wait(value) -> float | bool | None:
    """The form field as given: True, False or seconds (>= 0); ValueError otherwise."""
    if value is None or isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in TRUE:
        return True
    if text in FALSE:
        return False
    try:
        seconds = float(text)
    except ValueError:
        raise ValueError("wait must be true, false or a number of seconds") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("wait must be true, false or a number of seconds >= 0")
    return seconds


def prefer_wait(header: str | None) -> float | None:
    """Seconds asked for by a `Prefer` header (wait=N, respond-async), or None."""
    if not header:
        return None
    asked = None
    for pref in header.replace(";", ",").split(","):
        name, _, value = pref.strip().partition("=")
        name = name.strip().lower()
        if name == "respond-async":
            asked = 0.0 if asked is None else asked
        elif name == "wait":
            try:
                seconds = float(value.strip().strip('"'))
            except ValueError:
                continue  # RFC 7240: a preference that cannot be understood is ignored
            if math.isfinite(seconds) and seconds >= 0:
                asked = seconds
    return asked


def wait_seconds(field: float | bool | None, prefer: str | None, cap: float) -> tuple[float, bool]:
    """(seconds to wait, whether the Prefer header decided it)."""
    if field is not None:
        seconds = cap if field is True else 0.0 if field is False else float(field)
        return min(seconds, cap), False
    asked = prefer_wait(prefer)
    if asked is not None:
        return min(asked, cap), True
    return cap, False
