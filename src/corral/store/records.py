"""The rows a store keeps, as frozen records. Payloads stay JSON text the store never parses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, get_args

from corral.store.scripts import ScriptFactory

RunStatus = Literal[
    "pending",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
    "needs_reconciliation",
]
RUN_STATUSES: tuple[RunStatus, ...] = get_args(RunStatus)
FINISHED_STATUSES: frozenset[RunStatus] = frozenset({"succeeded", "failed", "cancelled"})
"""A run in one of these will never execute again."""

StepStatus = Literal["started", "succeeded", "failed"]
StepKind = Literal["step", "sleep", "signal", "child.start", "child.result", "now"]
STEP_KINDS: tuple[StepKind, ...] = get_args(StepKind)

ReconcileOutcome = Literal["retry", "succeeded", "failed"]
"""What a person found an at-most-once step in flight at a crash did: it did not take effect
(run it again), it did (here is its result), or it must count as failed."""

DEFAULT_TENANT = "default"


@dataclass(frozen=True, slots=True)
class NewRun:
    """What it takes to create a run."""

    run_id: str
    workflow: str
    workflow_version: str
    input: str
    created_at: float
    tenant: str = DEFAULT_TENANT
    idempotency_key: str | None = None
    parent_run_id: str | None = None
    parent_step_seq: int | None = None
    started_by: str | None = None
    """Who started the run (a principal's name); a child run carries its parent's."""


@dataclass(frozen=True, slots=True)
class RunRecord:
    run_id: str
    tenant: str
    workflow: str
    workflow_version: str
    status: RunStatus
    input: str
    result: str | None
    error: str | None
    idempotency_key: str | None
    parent_run_id: str | None
    parent_step_seq: int | None
    created_at: float
    updated_at: float
    wake_at: float | None
    wake_seq: int
    lease_owner: str | None
    lease_epoch: int
    lease_expires_at: float | None
    claims: int
    started_by: str | None
    """Who started the run (None: not recorded); a child run carries its parent's."""
    root_run_id: str | None = None
    """The top of the run's tree of child runs (the run itself for a run without a parent);
    None for runs journaled before it was recorded."""

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One entry of a run's journal: a step's intent and, once it finished, its outcome."""

    run_id: str
    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    at_most_once: bool
    detail: str | None
    result: str | None
    error: str | None
    started_at: float
    finished_at: float | None

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.seq}"


@dataclass(frozen=True, slots=True)
class StepWrite:
    """A journal write from the run holding lease `epoch`: an intent, or an outcome.

    `status == "started"` writes the intent; any other status writes (or completes) the entry.
    """

    run_id: str
    epoch: int
    seq: int
    kind: StepKind
    name: str
    status: StepStatus
    at: float
    at_most_once: bool = False
    detail: str | None = None
    result: str | None = None
    error: str | None = None
    retrying: bool = False
    """With `status == "started"`: an attempt failed and the step will be tried again; the write
    records the attempt's `error` and the attempts so far in `detail`."""
    scripts: tuple[ScriptFactory[Any], ...] = ()
    """Transaction scripts to run in the same transaction as this write (an outcome's audit
    entry): they commit with it, or the write fails with them."""

    @property
    def idempotency_key(self) -> str:
        return f"{self.run_id}:{self.seq}"


@dataclass(frozen=True, slots=True)
class SignalRecord:
    signal_id: int
    run_id: str
    name: str
    payload: str
    created_at: float
    consumed_seq: int | None
