"""What both SQL backends share: the columns, the rows, the journal-write statements.

Statements here use `?` placeholders; `postgres_sql()` turns them into psycopg's `%s`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral.store.records import RunRecord, StepRecord, StepWrite

CANCELLED_ERROR = json.dumps({"code": "cancelled", "type": "Cancelled", "message": "cancelled"})

RUN_COLUMNS = (
    "run_id, tenant, workflow, workflow_version, status, input, result, error, idempotency_key,"
    " parent_run_id, parent_step_seq, created_at, updated_at, wake_at, wake_seq, lease_owner,"
    " lease_epoch, lease_expires_at, claims"
)
STEP_COLUMNS = (
    "run_id, seq, kind, name, status, at_most_once, detail, result, error, started_at, finished_at"
)


INSERT_INTENT = (
    "INSERT INTO steps (run_id, seq, kind, name, status, at_most_once, detail, started_at)"
    " VALUES (?, ?, ?, ?, 'started', ?, ?, ?) ON CONFLICT (run_id, seq) DO NOTHING"
)
UPSERT_OUTCOME = (
    "INSERT INTO steps (run_id, seq, kind, name, status, at_most_once, detail, result, error,"
    " started_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status,"
    " result = excluded.result, error = excluded.error, finished_at = excluded.finished_at,"
    " detail = coalesce(excluded.detail, steps.detail)"
)


def intent_row(write: StepWrite) -> tuple[Any, ...]:
    return (
        write.run_id,
        write.seq,
        write.kind,
        write.name,
        int(write.at_most_once),
        write.detail,
        write.at,
    )


def outcome_row(write: StepWrite) -> tuple[Any, ...]:
    return (
        write.run_id,
        write.seq,
        write.kind,
        write.name,
        write.status,
        int(write.at_most_once),
        write.detail,
        write.result,
        write.error,
        write.at,
        write.at,
    )


def run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(*row)


def step_from_row(row: Sequence[Any]) -> StepRecord:
    values = list(row)
    values[5] = bool(values[5])
    return StepRecord(*values)


def postgres_sql(statement: str) -> str:
    """A statement with `?` placeholders, for psycopg (`%s`)."""
    return statement.replace("?", "%s")
