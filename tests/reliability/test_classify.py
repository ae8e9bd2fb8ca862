"""Which failures are passing: Corral's errors by kind, builtin I/O errors, HTTP errors by shape."""

from __future__ import annotations

import asyncio
import email.utils
from typing import Any

import pytest

from corral.errors import (
    ApprovalRequired,
    BudgetExceeded,
    CircuitOpen,
    LeaseLost,
    ModelCallFailed,
    NotSerializable,
    Paused,
    PolicyDenied,
    RetryStep,
    RunDeadlineExceeded,
    StepFailed,
    StepLimitExceeded,
    StepTimeout,
    StoreUnavailable,
    ToolArgumentsInvalid,
    ToolFailed,
    ToolRetry,
    UnknownTool,
    UsageError,
)
from corral.reliability import Transient, transient

NOW = 1_700_000_000.0


class Response:
    """The shape of an httpx / requests response, as far as classification looks."""

    def __init__(self, status_code: Any, headers: Any = None) -> None:
        self.status_code = status_code
        self.headers = headers if headers is not None else {}


class ResponseError(Exception):
    """Like httpx.HTTPStatusError: the status is on `response`."""

    def __init__(self, response: Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


class StatusError(Exception):
    """Like the model SDKs' APIStatusError: the status is on the error."""

    def __init__(self, status_code: Any) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


class CaseInsensitiveHeaders:
    """Like httpx.Headers: `get` ignores case; not a Mapping subclass."""

    def __init__(self, **values: str) -> None:
        self._values = {k.lower().replace("_", "-"): v for k, v in values.items()}

    def get(self, key: str, default: str | None = None) -> str | None:
        return self._values.get(key.lower(), default)


NOT_TRANSIENT: list[BaseException] = [
    ToolArgumentsInvalid("amount is not a number"),
    UnknownTool("no tool frobnicate"),
    PolicyDenied("refunds over 500 need a human"),
    BudgetExceeded("the run spent its tokens"),
    Paused("agent refunds is paused"),
    ApprovalRequired("needs finance"),
    ToolRetry("order ids look like A-1234"),
    RunDeadlineExceeded("the run's deadline passed"),
    NotSerializable("a socket cannot be journaled"),
    UsageError("bad call"),
    StoreUnavailable("locked"),
    StepLimitExceeded("too many steps"),
    StepFailed("step 3 failed", error_type="ConnectionError"),
    ToolFailed("the tool raised"),
    LeaseLost("fenced"),
    ModelCallFailed("HTTP 400: bad request", status=400, retryable=False),
    ModelCallFailed("malformed", status=None, retryable=False),
    ValueError("no"),
    KeyError("x"),
    asyncio.CancelledError(),
    ResponseError(Response(400)),
    ResponseError(Response(404)),
    StatusError(401),
    StatusError(True),  # a bool is not a status
    StatusError("503"),  # nor is text
]


@pytest.mark.parametrize("error", NOT_TRANSIENT, ids=lambda e: type(e).__name__)
def test_mistakes_and_decisions_are_not_transient(error: BaseException) -> None:
    assert transient(error) is None


def test_retryable_model_failures_are_transient_with_their_retry_after() -> None:
    limited = ModelCallFailed("rate limited", status=429, retryable=True, retry_after=7.5)
    assert transient(limited) == Transient("HTTP 429", 7.5)
    unreachable = ModelCallFailed("no answer", status=None, retryable=True)
    assert transient(unreachable) == Transient("model call failed", None)


def test_corral_signals_of_passing_trouble_are_transient() -> None:
    assert transient(StepTimeout("slow", timeout=30)) == Transient("timed out after 30s")
    assert transient(StepTimeout("slow")) == Transient("timed out")
    circuit = CircuitOpen("open", dependency="openai", state="open", retry_after=12.0)
    assert transient(circuit) == Transient("circuit of openai open", 12.0)
    assert transient(RetryStep("ledger locked", retry_after=3)) == Transient("ledger locked", 3.0)
    assert transient(RetryStep("busy")) == Transient("busy", None)


@pytest.mark.parametrize(
    "error",
    [TimeoutError(), ConnectionResetError(), ConnectionRefusedError(), BrokenPipeError()],
    ids=lambda e: type(e).__name__,
)
def test_builtin_timeouts_and_connection_errors_are_transient(error: BaseException) -> None:
    found = transient(error)
    assert found is not None
    assert found.retry_after is None
    assert type(error).__name__ in found.reason


@pytest.mark.parametrize("status", [429, 500, 502, 503, 504, 599])
def test_http_errors_of_overload_are_transient_by_shape(status: int) -> None:
    assert transient(StatusError(status)) == Transient(f"HTTP {status}")
    assert transient(ResponseError(Response(status))) == Transient(f"HTTP {status}")


def test_retry_after_seconds_is_honoured_whatever_the_header_case() -> None:
    plain = ResponseError(Response(503, {"Retry-After": "7"}))
    assert transient(plain) == Transient("HTTP 503", 7.0)
    lower = ResponseError(Response(429, {"retry-after": " 2.5 "}))
    assert transient(lower) == Transient("HTTP 429", 2.5)
    httpx_like = ResponseError(Response(429, CaseInsensitiveHeaders(Retry_After="4")))
    assert transient(httpx_like) == Transient("HTTP 429", 4.0)
    as_bytes = ResponseError(Response(503, {b"x": b"y", "Retry-After": b"9"}))
    assert transient(as_bytes) == Transient("HTTP 503", 9.0)


def test_retry_after_as_an_http_date_counts_from_now() -> None:
    date = email.utils.formatdate(NOW + 90, usegmt=True)
    error = ResponseError(Response(503, {"Retry-After": date}))
    assert transient(error, now=NOW) == Transient("HTTP 503", 90.0)
    past = email.utils.formatdate(NOW - 90, usegmt=True)
    assert transient(ResponseError(Response(503, {"Retry-After": past})), now=NOW) == Transient(
        "HTTP 503", 0.0
    )


@pytest.mark.parametrize("value", ["soon", "", "-5", "nan", "inf"])
def test_an_unusable_retry_after_is_ignored_or_clamped(value: str) -> None:
    found = transient(ResponseError(Response(503, {"Retry-After": value})))
    assert found is not None
    assert found.retry_after in (None, 0.0)
    if value == "-5":
        assert found.retry_after == 0.0


def test_a_status_on_the_error_wins_over_its_response() -> None:
    error = StatusError(503)
    error.response = Response(400)  # type: ignore[attr-defined]
    assert transient(error) == Transient("HTTP 503")
