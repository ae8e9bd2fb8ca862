"""Which failures are passing: the one place that decides what is worth trying again.

A failure is *transient* when the same call, made again later, may well succeed: the dependency
was overloaded, unreachable, slow, or said so itself (`RetryStep`, a 503, a 429). Everything
else is not, and in particular no failure that is the caller's fault (bad arguments, an unknown
tool, a 400) or a decision (a policy, a budget, a pause, a deadline): retrying those repeats the
same answer, or worse, works around a control that said no.

Both the retry policy (should this step be tried again?) and the circuit breakers (did the
dependency fail, or did it answer "no"?) ask `transient`, so they never disagree.

HTTP errors are recognised by their shape, not their class (an int `status_code` on the error or
on its `response`, as httpx, requests and the model SDKs have), so nothing here imports an HTTP
library.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeGuard

from corral.errors import (
    CircuitOpen,
    CorralError,
    ModelCallFailed,
    RetryStep,
    StepTimeout,
)

TRANSIENT_STATUSES = frozenset({429, 502, 503, 504})
"""HTTP statuses that mean "not now" (besides every other 5xx)."""


@dataclass(frozen=True, slots=True)
class Transient:
    """A failure worth trying again.

    Attributes:
        reason: A few words for people, e.g. `HTTP 503` or `timed out after 30s`; retry
            decisions quote it in the journal.
        retry_after: Seconds the dependency asked to be left alone for (a `Retry-After`, a
            breaker's time until it tries again), or None.
    """

    reason: str
    retry_after: float | None = None


def transient(error: BaseException, *, now: float | None = None) -> Transient | None:
    """Whether `error` is a passing failure, and what it says about when to try again.

    Transient: `ModelCallFailed` marked `retryable`, `StepTimeout`, `CircuitOpen`, `RetryStep`,
    the builtin `TimeoutError` and `ConnectionError` (and their subclasses), and any other
    exception carrying an HTTP status (`status_code`, or `response.status_code`) of 429 or 5xx,
    whose `Retry-After` header (seconds or an HTTP date) is honoured. Every other error,
    including every other Corral error, is not.

    Args:
        error: The exception an attempt raised.
        now: Seconds since the epoch, to turn a `Retry-After` date into a delay (default: the
            system clock; a date is absolute wall-clock time, so only the real clock is right
            in production).

    Returns:
        A `Transient`, or None when trying again is pointless.
    """
    if isinstance(error, CorralError):
        return _corral_error(error)
    if isinstance(error, TimeoutError):
        return Transient(f"timed out ({type(error).__name__})")
    if isinstance(error, ConnectionError):
        return Transient(f"connection failed ({type(error).__name__})")
    status, response = _http_status(error)
    if status is not None and (status in TRANSIENT_STATUSES or status >= 500):
        headers = getattr(response, "headers", None) if response is not None else None
        if headers is None:
            headers = getattr(error, "headers", None)
        return Transient(f"HTTP {status}", _retry_after_header(headers, now))
    return None


def _corral_error(error: CorralError) -> Transient | None:
    """Corral's own errors say what they are: only these four kinds pass."""
    if isinstance(error, ModelCallFailed):
        if not error.ids.get("retryable"):
            return None
        status = error.ids.get("status")
        what = f"HTTP {status}" if isinstance(status, int) else "model call failed"
        return Transient(what, _seconds(error.ids.get("retry_after")))
    if isinstance(error, StepTimeout):
        limit = _seconds(error.ids.get("timeout"))
        return Transient("timed out" if limit is None else f"timed out after {limit:g}s")
    if isinstance(error, CircuitOpen):
        name = error.ids.get("dependency")
        what = "circuit open" if name is None else f"circuit of {name} open"
        return Transient(what, _seconds(error.ids.get("retry_after")))
    if isinstance(error, RetryStep):
        return Transient(
            _short(error.message) or "retry requested", _seconds(error.ids.get("retry_after"))
        )
    # ToolArgumentsInvalid, UnknownTool, PolicyDenied, BudgetExceeded, Paused, ApprovalRequired,
    # ToolRetry, RunDeadlineExceeded, NotSerializable, StepLimitExceeded, every UsageError:
    # trying again gives the same answer (tests/reliability/test_classify.py lists them).
    return None


def _http_status(error: BaseException) -> tuple[int | None, Any]:
    """The HTTP status an error carries, on itself or on its `response`, and that response."""
    status = getattr(error, "status_code", None)
    response = getattr(error, "response", None)
    if _is_status(status):
        return status, response
    if response is not None:
        status = getattr(response, "status_code", None)
        if _is_status(status):
            return status, response
    return None, None


def _is_status(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599


def _retry_after_header(headers: object, now: float | None) -> float | None:
    """A `Retry-After` header in seconds (RFC 9110: delay-seconds or an HTTP date)."""
    if headers is None or not hasattr(headers, "get"):
        return None
    value: object = headers.get("retry-after")
    if value is None and isinstance(headers, Mapping):
        # A plain dict is case-sensitive (httpx's and requests' headers are not).
        value = next(
            (v for k, v in headers.items() if isinstance(k, str) and k.lower() == "retry-after"),
            None,
        )
    if not isinstance(value, str | bytes):
        return None
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    text = text.strip()
    seconds = _seconds(text)
    if seconds is not None:
        return seconds
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)  # HTTP dates are GMT
    reference = time.time() if now is None else now
    return max(0.0, moment.timestamp() - reference)


def _seconds(value: object) -> float | None:
    """A non-negative, finite number of seconds from a number or numeric text; else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if isinstance(value, int | float) and math.isfinite(value):
        return max(0.0, float(value))
    return None


def _short(text: str, limit: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["TRANSIENT_STATUSES", "Transient", "transient"]
