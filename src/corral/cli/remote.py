"""Remote mode (`corral --server URL`): one client for the REST API, and its errors as exit codes.

With `--server`, a command that the API offers sends its request here instead of opening a
database; the rest of the command (its human output, its `--json`) stays the command's own. This
module is the one place that speaks HTTP: it adds the key, follows list cursors, and turns the
API's RFC 9457 problems and network failures into `RemoteError`s, which `reporting_errors`
prints and exits with, like the local errors they stand for:

    401, 403, 404, 409, 422 (and other 4xx)   exit 2 (a 409 `already_decided`: exit 1, as locally)
    503, connection refused, DNS, timeout     exit 3, naming the server's URL (like a database
                                              that does not answer)
    other 5xx, an answer that is not JSON     exit 70

Which commands have a remote mode is `REMOTE_COMMANDS`; any other command stops at
`Settings.of(ctx)` with `NoRemoteMode` (exit 2) before it touches anything. The key is sent in
the `Authorization` header only: it is never printed, not even in an error.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

import httpx2

from corral.errors import CorralError, UsageError
from corral.store import RunRecord, StepRecord

API_PREFIX = "/api/v1"
TIMEOUT = 30.0
"""Seconds one request may take (connecting, or waiting for the answer) before exit 3."""

REMOTE_COMMANDS = frozenset(
    {
        "run",
        "signal",
        "workflows",
        "metrics",
        "costs",
        "runs list",
        "runs show",
        "runs cancel",
        "runs trace",
        "runs summary",
        "runs diff",
        "runs compare",
        "runs cost",
        "runs search",
        "approvals list",
        "approvals show",
        "approvals approve",
        "approvals reject",
        "policy apply",
        "policy list",
        "policy show",
        "policy diff",
        "policy rollback",
        "policy test",
        "audit verify",
        "pause agent",
        "pause tenant",
        "pause list",
        "resume agent",
        "resume tenant",
        "breakers",
        "keys create",
        "keys list",
        "keys revoke",
        "webhooks add",
        "webhooks list",
        "webhooks pause",
        "webhooks resume",
        "webhooks remove",
        "webhooks deliveries",
        "webhooks test",
    }
)
"""The commands (paths below `corral`) that work with `--server`: those whose operation the
REST API offers (docs/api.md). The others work on a database directly."""


class RemoteError(CorralError):
    """The server refused a request, failed, or could not be reached."""

    code: ClassVar[str] = "remote_error"

    def __init__(
        self,
        message: str,
        *,
        exit_code: int,
        hint: str | None = None,
        problem_code: str | None = None,
        **ids: Any,
    ) -> None:
        super().__init__(message, **ids)
        self.exit_code = exit_code
        self.hint = hint
        self.problem_code = problem_code


class NoRemoteMode(UsageError):
    """A command that works on a database directly was given `--server`."""

    code = "no_remote_mode"


def no_remote_mode(command: str) -> NoRemoteMode:
    return NoRemoteMode(
        f"`corral {command}` works on a database directly; it has no remote mode (--server)",
        command=command,
    )


def command_path(ctx: Any) -> str:
    """The command's path below `corral` (`runs show`), from the click context chain."""
    names: list[str] = []
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


def api_base(server: str) -> str:
    """The API's base URL for `--server` given as `http://host:port` (or with `/api/v1`)."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise RemoteError(
            f"--server {server!r} is not an http:// or https:// URL",
            exit_code=2,
            hint="give the server's address, e.g. --server https://corral.internal:8000",
        )
    base = server.rstrip("/")
    return base if base.endswith(API_PREFIX) else base + API_PREFIX


def segment(value: str) -> str:
    """An id as one path segment (a `/` in it cannot reach another route)."""
    return quote(value, safe="")


class Remote:
    """A client for one server and key: `get`, `post`, `delete` answer the decoded JSON."""

    def __init__(self, server: str, key: str, *, timeout: float = TIMEOUT) -> None:
        self.server = server
        self._client = httpx2.Client(
            base_url=api_base(server),
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Remote:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json(self._send("GET", path, params=params))

    def post(self, path: str, body: Any = None, *, params: dict[str, Any] | None = None) -> Any:
        return _json(self._send("POST", path, params=params, body=body))

    def patch(self, path: str, body: Any) -> Any:
        return _json(self._send("PATCH", path, body=body))

    def delete(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return _json(self._send("DELETE", path, params=params))

    def text(self, path: str, params: dict[str, Any] | None = None) -> str:
        return self._send("GET", path, params=params).text

    def post_status(self, path: str, body: Any = None) -> tuple[int, Any]:
        """POST, and the status with the answer (201 made, 200 there already)."""
        response = self._send("POST", path, body=body)
        return response.status_code, _json(response)

    def items(self, path: str, params: dict[str, Any] | None, *, limit: int) -> list[Any]:
        """Up to `limit` items of a list, following `next_cursor` page after page."""
        return list(self._pages(path, dict(params or {}), limit))

    def _pages(self, path: str, params: dict[str, Any], limit: int) -> Iterator[Any]:
        wanted = limit
        cursor: str | None = None
        while wanted > 0:
            page = self.get(path, {**params, "limit": min(wanted, 500), "cursor": cursor})
            items = page.get("items", [])
            yield from items[:wanted]
            wanted -= len(items)
            cursor = page.get("next_cursor")
            if cursor is None or not items:
                return

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx2.Response:
        query = {k: _param(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client.request(
                method, path, params=query, json=body if method in ("POST", "PATCH") else None
            )
        except httpx2.TimeoutException:
            raise self._unreachable(f"no answer within {TIMEOUT:g}s") from None
        except httpx2.TransportError as error:
            raise self._unreachable(str(error) or type(error).__name__) from None
        if response.status_code >= 400:
            raise problem_error(response, self.server)
        return response

    def _unreachable(self, why: str) -> RemoteError:
        return RemoteError(
            f"cannot reach the Corral server at {self.server}: {why}",
            exit_code=3,
            hint="check --server (CORRAL_SERVER) and that `corral server` runs there; then try "
            "again",
            server=self.server,
        )


def _param(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _json(response: httpx2.Response) -> Any:
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        raise RemoteError(
            f"the server answered {response.request.url.path} with something that is not JSON",
            exit_code=70,
            hint="is --server the address of a Corral server?",
        ) from None


def problem_error(response: httpx2.Response, server: str) -> RemoteError:
    """The CLI's error for an error answer: a problem+json body's `detail` and `code`."""
    status = response.status_code
    try:
        problem = response.json()
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        problem = {}
    code = str(problem.get("code") or f"http_{status}")
    detail = str(problem.get("detail") or problem.get("title") or response.reason_phrase)
    for field_error in problem.get("errors") or []:
        where = ".".join(str(part) for part in field_error.get("loc", []))
        detail += f"\n  {where}: {field_error.get('msg', '')}"
    exit_code, hint = _exit_and_hint(status, code, server)
    return RemoteError(detail, exit_code=exit_code, hint=hint, problem_code=code, status=status)


def _exit_and_hint(status: int, code: str, server: str) -> tuple[int, str | None]:
    if status == 401:
        return 2, (
            "the server refused the key (malformed, unknown, revoked or expired): check "
            "CORRAL_API_KEY (or --key); an admin makes keys with `corral keys create`"
        )
    if status == 403 and code == "forbidden":
        return 2, "the key's role is too low for this: use a key with a higher role"
    if status == 403:
        return 2, "the key's principal may not do this (governance refused it)"
    if status == 404:
        return 2, "it does not exist in the key's tenant (check the id)"
    if code == "already_decided":
        return 1, "see the decision with `corral approvals show APPROVAL_ID`"
    if status == 503:
        return 3, f"the server at {server} cannot use its database; try again later"
    if status >= 500:
        return 70, f"the server at {server} failed; its log has the details"
    return 2, None


# -- the API's shapes as the records the CLI's tables and details render -----------------------


def timestamp(value: str | None) -> float | None:
    """An ISO 8601 time of the API as seconds since the epoch."""
    if value is None:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _text(value: Any) -> str | None:
    """A decoded payload back as JSON text, as the store keeps it (`display` decodes it)."""
    return None if value is None else json.dumps(value, ensure_ascii=False)


def run_record(data: dict[str, Any]) -> RunRecord:
    """A run of the API as a `RunRecord` (the lease fields, which the API leaves out, empty)."""
    return RunRecord(
        run_id=data["run_id"],
        tenant=data["tenant"],
        workflow=data["workflow"],
        workflow_version=data["workflow_version"],
        status=data["status"],
        input=_text(data.get("input")) or "null",
        result=_text(data.get("result")),
        error=_text(data.get("error")),
        idempotency_key=data.get("idempotency_key"),
        parent_run_id=data.get("parent_run_id"),
        parent_step_seq=data.get("parent_step_seq"),
        created_at=timestamp(data["created_at"]) or 0.0,
        updated_at=timestamp(data["updated_at"]) or 0.0,
        wake_at=timestamp(data.get("wake_at")),
        wake_seq=0,
        lease_owner=None,
        lease_epoch=0,
        lease_expires_at=None,
        claims=0,
        started_by=data.get("started_by"),
    )


def step_record(run_id: str, data: dict[str, Any]) -> StepRecord:
    return StepRecord(
        run_id=run_id,
        seq=data["seq"],
        kind=data["kind"],
        name=data["name"],
        status=data["status"],
        at_most_once=data["at_most_once"],
        detail=_text(data.get("detail")),
        result=_text(data.get("result")),
        error=_text(data.get("error")),
        started_at=timestamp(data["started_at"]) or 0.0,
        finished_at=timestamp(data.get("finished_at")),
    )
