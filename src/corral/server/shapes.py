"""The JSON shapes of the API: pydantic models, so the published OpenAPI describes every answer.

They follow the CLI's `--json` shapes (`corral.cli.shapes`): payloads are decoded JSON values
(redacted as `CORRAL_REDACT` says: emails, phone and card numbers by default), timestamps are
ISO 8601 in UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from corral.governance.keys import ApiKey
from corral.governance.redaction import Redactor
from corral.store import RunRecord, SignalRecord, StepRecord

T = TypeVar("T")


def moment(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


@functools.lru_cache(maxsize=4)
def _redactor(setting: str) -> Redactor:
    return Redactor.from_settings({"CORRAL_REDACT": setting})


def payload(text: str | None) -> Any:
    """A stored payload as a JSON value, redacted."""
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return _redactor(os.environ.get("CORRAL_REDACT", "")).redact_json(value)


class Page(BaseModel, Generic[T]):
    """One page of a list; pass `next_cursor` back as `?cursor=` for the next (null: the end)."""

    items: list[T]
    next_cursor: str | None = None


class RunOut(BaseModel):
    run_id: str
    workflow: str
    workflow_version: str
    status: str
    tenant: str
    input: Any = None
    result: Any = None
    error: Any = None
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    parent_step_seq: int | None = None
    started_by: str | None = None
    created_at: dt.datetime
    updated_at: dt.datetime
    wake_at: dt.datetime | None = None

    @staticmethod
    def of(run: RunRecord) -> RunOut:
        return RunOut(
            run_id=run.run_id,
            workflow=run.workflow,
            workflow_version=run.workflow_version,
            status=run.status,
            tenant=run.tenant,
            input=payload(run.input),
            result=payload(run.result),
            error=payload(run.error),
            idempotency_key=run.idempotency_key,
            parent_run_id=run.parent_run_id,
            parent_step_seq=run.parent_step_seq,
            started_by=run.started_by,
            created_at=dt.datetime.fromtimestamp(run.created_at, tz=dt.UTC),
            updated_at=dt.datetime.fromtimestamp(run.updated_at, tz=dt.UTC),
            wake_at=moment(run.wake_at),
        )


class StartRun(BaseModel):
    """A run to start: `workflow` is a registered workflow's name (`agent:<name>` for an
    agent)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    workflow: str = Field(min_length=1, max_length=200)
    input: Any = None
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        description="Starting again with the same key returns the run it started (200, not 201).",
    )


class StepOut(BaseModel):
    seq: int
    kind: str
    name: str
    status: str
    idempotency_key: str
    at_most_once: bool
    detail: Any = None
    result: Any = None
    error: Any = None
    started_at: dt.datetime
    finished_at: dt.datetime | None = None

    @staticmethod
    def of(step: StepRecord) -> StepOut:
        return StepOut(
            seq=step.seq,
            kind=step.kind,
            name=step.name,
            status=step.status,
            idempotency_key=step.idempotency_key,
            at_most_once=step.at_most_once,
            detail=payload(step.detail),
            result=payload(step.result),
            error=payload(step.error),
            started_at=dt.datetime.fromtimestamp(step.started_at, tz=dt.UTC),
            finished_at=moment(step.finished_at),
        )


class Journal(BaseModel):
    run_id: str
    steps: list[StepOut]


class SignalIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    data: Any = None


class SignalOut(BaseModel):
    signal_id: int
    run_id: str
    name: str
    data: Any = None
    created_at: dt.datetime

    @staticmethod
    def of(signal: SignalRecord) -> SignalOut:
        return SignalOut(
            signal_id=signal.signal_id,
            run_id=signal.run_id,
            name=signal.name,
            data=payload(signal.payload),
            created_at=dt.datetime.fromtimestamp(signal.created_at, tz=dt.UTC),
        )


class Decision(BaseModel):
    """A decision on an approval request. `arguments` (approving only) replaces the call's
    arguments; it is checked against the tool's schema."""

    model_config = ConfigDict(extra="forbid", strict=True)

    approve: bool
    reason: str = Field(min_length=1, max_length=2000)
    arguments: dict[str, Any] | None = None


class KeyOut(BaseModel):
    key_id: str
    tenant: str
    role: str
    principal: str
    name: str
    created_at: dt.datetime
    created_by: str
    expires_at: dt.datetime | None = None
    last_used_at: dt.datetime | None = None
    revoked_at: dt.datetime | None = None

    @staticmethod
    def of(key: ApiKey) -> KeyOut:
        return KeyOut(
            key_id=key.key_id,
            tenant=key.tenant,
            role=key.role,
            principal=key.principal,
            name=key.name,
            created_at=dt.datetime.fromtimestamp(key.created_at, tz=dt.UTC),
            created_by=key.created_by,
            expires_at=moment(key.expires_at),
            last_used_at=moment(key.last_used_at),
            revoked_at=moment(key.revoked_at),
        )


class NewKeyOut(KeyOut):
    token: str = Field(description="The key itself: shown this once, never again.")


class CreateKey(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    role: str = Field(pattern="^(viewer|operator|approver|admin)$")
    name: str = Field(min_length=1, max_length=200)
    principal: str | None = Field(default=None, min_length=1, max_length=200)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


__all__ = [
    "CreateKey",
    "Decision",
    "Journal",
    "KeyOut",
    "NewKeyOut",
    "Page",
    "RunOut",
    "SignalIn",
    "SignalOut",
    "StartRun",
    "StepOut",
    "moment",
    "payload",
]
