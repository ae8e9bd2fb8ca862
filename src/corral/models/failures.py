"""What the provider clients share about failures: one `ModelCallFailed` for an SDK error.

The `openai` and `anthropic` SDKs raise errors of the same three shapes under different class
names: a status error (an HTTP answer with a status and a body), a connection error (no answer,
timeouts included), and a response validation error (an answer that is not what the API
promises). Each client passes its SDK's classes; the message, the ids and whether trying later
may work are decided here, once.
"""

from __future__ import annotations

import json
from typing import Any

from corral.errors import ModelCallFailed

RETRYABLE_STATUSES = frozenset({408, 409, 429})
"""Besides 5xx: the statuses the SDKs themselves retry (timeout, lock conflict, rate limit)."""


def malformed(model: str, url: str, problem: str) -> ModelCallFailed:
    """A response that could not be used."""
    return ModelCallFailed(
        f"model {model!r} at {url} sent a malformed response: {problem}",
        model=model,
        url=url,
        status=None,
        retryable=False,
    )


def call_failed(
    model: str,
    url: str,
    error: Exception,
    *,
    key_setting: str,
    status_error: type[Exception],
    connection_error: type[Exception],
    validation_error: type[Exception],
) -> ModelCallFailed:
    """The `ModelCallFailed` for an SDK error: what happened, where, and whether to try later."""
    if isinstance(error, status_error):
        status: int | None = int(error.status_code)  # type: ignore[attr-defined]
        assert status is not None
        if status == 401:
            what = (
                f"the API key was rejected (HTTP 401): check {key_setting} (or "
                f"CORRAL_{key_setting})"
            )
        else:
            what = f"HTTP {status}: {_detail(error)}"
        retryable = status in RETRYABLE_STATUSES or status >= 500
        retry_after = _retry_after(error)
    elif isinstance(error, connection_error):
        # Includes timeouts (and any retries the SDK was configured to make itself).
        status, retryable, retry_after = None, True, None
        what = f"could not get an answer ({type(error).__name__}: {error.message})"  # type: ignore[attr-defined]
    elif isinstance(error, validation_error):
        return malformed(model, url, str(error.message))  # type: ignore[attr-defined]
    else:
        # Anything else an SDK raises about a response it received (undecodable JSON, a bad
        # stream event) means the server's answer was not usable.
        return malformed(model, url, f"{type(error).__name__}: {error}")
    suffix = " (retryable)" if retryable else ""
    return ModelCallFailed(
        f"model {model!r} at {url} failed: {what}{suffix}",
        model=model,
        url=url,
        status=status,
        retryable=retryable,
        retry_after=retry_after,
    )


def _retry_after(error: Any) -> float | None:
    """Seconds the server asked us to wait (`Retry-After`, in seconds), if it said."""
    response = getattr(error, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    try:
        milliseconds = headers.get("retry-after-ms")  # OpenAI's finer form, read first
        if milliseconds is not None:
            return max(float(milliseconds) / 1000, 0.0)
        value = headers.get("retry-after")
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare from model APIs; the backoff applies


def _detail(error: Any) -> str:
    """The server's own words about an error: its body's message, else the SDK's summary."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error")
        message = inner.get("message") if isinstance(inner, dict) else body.get("message")
        if isinstance(message, str) and message:
            return message
    return str(error.message)


def schema_note(schema: dict[str, Any]) -> str:
    """The instruction that asks for a final answer in JSON satisfying `schema`."""
    return (
        "When you give your final answer (not a tool call), reply with only a JSON value that "
        f"satisfies this JSON schema:\n{json.dumps(schema, sort_keys=True)}"
    )
