"""What both SQL backends share: the columns, the rows, the journal-write statements.

Statements here use `?` placeholders; `postgres_sql()` turns them into psycopg's `%s`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from corral.store.records import NewRun, RunRecord, StepRecord, StepWrite

CANCELLED_ERROR = json.dumps({"code": "cancelled", "type": "Cancelled", "message": "cancelled"})

RUN_COLUMNS = (
    "run_id, tenant, workflow, workflow_version, status, input, result, error, idempotency_key,"
    " parent_run_id, parent_step_seq, created_at, updated_at, wake_at, wake_seq, lease_owner,"
    " lease_epoch, lease_expires_at, claims, started_by, root_run_id"
)
STEP_COLUMNS = (
    "run_id, seq, kind, name, status, at_most_once, detail, result, error, started_at, finished_at"
)


INSERT_RUN = (
    "INSERT INTO runs (run_id, tenant, workflow, workflow_version, status, input,"
    " idempotency_key, parent_run_id, parent_step_seq, created_at, updated_at, started_by,"
    " root_run_id) VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?,"
    " coalesce((SELECT coalesce(p.root_run_id, p.run_id) FROM runs p WHERE p.run_id = ?), ?))"
)
"""A new run; its `root_run_id` (the top of its tree of child runs, which cost reports group by)
is its parent's root, or the run itself."""

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


def new_run_row(new: NewRun) -> tuple[Any, ...]:
    """The parameters of `INSERT_RUN`."""
    return (
        new.run_id,
        new.tenant,
        new.workflow,
        new.workflow_version,
        new.input,
        new.idempotency_key,
        new.parent_run_id,
        new.parent_step_seq,
        new.created_at,
        new.created_at,
        new.started_by,
        new.parent_run_id,
        new.run_id,
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
        None if write.status == "started" else write.at,
    )


def is_intent(write: StepWrite) -> bool:
    """An intent is inserted once (never over an outcome); anything else is upserted."""
    return write.status == "started" and not write.retrying


def run_from_row(row: Sequence[Any]) -> RunRecord:
    return RunRecord(*row)


def step_from_row(row: Sequence[Any]) -> StepRecord:
    values = list(row)
    values[5] = bool(values[5])
    return StepRecord(*values)


def postgres_sql(statement: str) -> str:
    """A statement with `?` placeholders, for psycopg (`%s`)."""
    return statement.replace("?", "%s")
