"""Errors in one format: RFC 9457 problem details (`application/problem+json`).

Every error the API returns is a problem object:

```json
{"type": "/problems/run_not_found", "title": "Not found", "status": 404,
 "detail": "no run 'b1…' in this tenant", "code": "run_not_found", "instance": "/api/v1/runs/b1…"}
```

`code` is stable (Corral's error codes, `corral.errors`, plus the API's own below); `detail` is
for people. Validation problems add `errors`: where each one is (`loc`) and what is wrong. A
request never gets a bare 500 with a traceback: an unexpected error is logged with the request's
id and answered as `internal_error`.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from corral.errors import CorralError, RunFailure

PROBLEM_JSON = "application/problem+json"
log = logging.getLogger("corral.server")

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    410: "Gone",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Unprocessable content",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}

_STATUS_OF_CODE = {
    "run_not_found": 404,
    "approval_not_found": 404,
    "policy_not_found": 404,
    "unknown_workflow": 404,
    "not_found": 404,
    "not_authorized": 403,
    "already_decided": 409,
    "run_finished": 409,
    "not_reconcilable": 409,
    "store_unavailable": 503,
    "schema_mismatch": 503,
    "audit_chain_broken": 409,
    "audit_log_empty": 404,
}
"""HTTP statuses of Corral error codes other than 422 (the default for a usage error)."""


class ProblemDetails(BaseModel):
    """An error answer (RFC 9457): `code` is stable, `detail` is for people."""

    type: str = Field(description="`/problems/<code>`")
    title: str
    status: int
    detail: str
    code: str
    instance: str = Field(description="The path of the request that failed.")
    errors: list[dict[str, Any]] | None = Field(
        default=None, description="Validation problems: where (`loc`) and what (`msg`)."
    )
    ids: dict[str, Any] | None = Field(default=None, description="The ids the error names.")


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` entries for error answers (`application/problem+json`)."""
    schema = {"$ref": "#/components/schemas/ProblemDetails"}
    return {
        status: {
            "description": _TITLES.get(status, "Error"),
            "content": {PROBLEM_JSON: {"schema": schema}},
        }
        for status in statuses
    }


class Problem(Exception):
    """An error the API answers with: raise it from a route."""

    def __init__(
        self, status: int, code: str, detail: str, *, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}


def not_found(what: str) -> Problem:
    """The answer for a resource that does not exist *or belongs to another tenant*: the two
    must be indistinguishable."""
    return Problem(404, "not_found", f"no {what} in this tenant")


def problem_response(
    request: Request,
    status: int,
    code: str,
    detail: str,
    *,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{code}",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        "code": code,
        "instance": request.url.path,
    }
    body.update(extra)
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def status_of(error: CorralError) -> int:
    if error.code in _STATUS_OF_CODE:
        return _STATUS_OF_CODE[error.code]
    if isinstance(error, RunFailure):
        return 409
    return 422


def install(app: FastAPI) -> None:
    """Answer every error of `app` as a problem."""

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, Problem)
        return problem_response(request, exc.status, exc.code, exc.detail, headers=exc.headers)

    async def on_corral_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, CorralError)
        status = status_of(exc)
        if status == 404:  # never say whether it exists elsewhere
            return problem_response(request, 404, exc.code, "not found in this tenant")
        ids = {k: v for k, v in exc.ids.items() if isinstance(v, str | int | float | bool)}
        return problem_response(request, status, exc.code, exc.message, ids=ids)

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": list(error.get("loc", ())),
                "msg": str(error.get("msg", "")),
                "type": error.get("type"),
            }
            for error in exc.errors()
        ]
        if any(error["type"] == "json_invalid" for error in errors):
            detail = "the body is not valid JSON"
            return problem_response(request, 400, "malformed_json", detail, errors=errors)
        where = ", ".join(".".join(str(p) for p in e["loc"]) for e in errors[:5])
        detail = f"the request is not valid: {where}" if where else "the request is not valid"
        return problem_response(request, 422, "invalid_request", detail, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status_code, "http_error"
        )
        detail = str(exc.detail) if exc.detail else _TITLES.get(exc.status_code, "error")
        return problem_response(
            request, exc.status_code, code, detail, headers=dict(exc.headers or {})
        )

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s %s", request.method, request.url.path)
        detail = "the server failed to answer; the error is in its log"
        return problem_response(request, 500, "internal_error", detail)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(CorralError, on_corral_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


__all__ = [
    "PROBLEM_JSON",
    "Problem",
    "ProblemDetails",
    "install",
    "not_found",
    "problem_response",
    "problem_responses",
    "status_of",
]
