"""Events people act on, read from the tables where Corral already records them.

Nothing is written when an event happens: approvals, runs, the audit log and the breakers'
transitions already hold each one with a time. `detect_events(since=, until=)` reads them for
the events whose time falls in a window; the live stream (`GET /api/v1/events`) and the webhook
outbox (`corral.control.webhooks`) are its two readers.

- `approval.requested`: a request was made (`approvals.created_at`);
  id `approval.requested:<approval_id>`.
- `approval.expiring`: a pending request's deadline is `EXPIRY_WARNING` away;
  id `approval.expiring:<approval_id>:<deadline>`.
- `run.failed`: a run failed (`runs.updated_at`); id `run.failed:<run_id>`.
- `budget.alert`: a budget refused a call or crossed a soft limit (the audit entries
  `budget.exceeded`, `budget.soft_limit`); id `budget.alert:<tenant>:<audit seq>`.
- `breaker.opened`: a worker's circuit breaker opened (`breaker_transitions`);
  id `breaker.opened:<transition_id>`.
- `run.updated` (the live stream only): a run changed (`runs.updated_at`);
  id `run.updated:<run_id>:<updated_at>:<status>` (a reader sees the run as it is when it
  reads: changes between two reads come as one).
- `webhook.test`: made by `POST /api/v1/webhooks/{id}/test`, read from nowhere;
  id `webhook.test:<uuid>`.

An event's id is stable: reading the same window twice gives the same ids, which is what makes
overlapping reads safe. An expiring approval's id holds its deadline, so an escalation (a new
deadline) warns again.

Tenants: every event belongs to the tenant of what it is about, except `breaker.opened`.
Breakers guard dependencies that every tenant's runs share (a model provider, a tool's API) and
carry no tenant, so a breaker event has `tenant=None`: it goes to every tenant's stream and to
every subscription to it, in any tenant.

Why a window and not a cursor: on PostgreSQL, transactions commit out of order, so a row stamped
10:00:01 can become visible after one stamped 10:00:02 was read. Readers scan from `LOOKBACK`
seconds before where they last read and drop what they have already seen by event id (the live
stream keeps the ids in memory; the webhook outbox inserts with `ON CONFLICT DO NOTHING`). The
same window absorbs clocks of different hosts that disagree by less than `LOOKBACK`.

Payloads (tool arguments, errors) are redacted as the API redacts them (`CORRAL_REDACT`,
`corral.governance.redaction`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal, cast, get_args

from corral.governance.approvals import (
    ApprovalRequest,
    approvals_created_between,
    approvals_expiring_between,
)
from corral.governance.audit import AuditRecord, entries_between
from corral.governance.redaction import SETTING, Redactor
from corral.reliability.breaker_store import TransitionRow, transitions_between
from corral.store import RunRecord
from corral.store.rows import RUN_COLUMNS, run_from_row
from corral.store.scripts import Script, Statement

EventType = Literal[
    "approval.requested",
    "approval.expiring",
    "run.failed",
    "budget.alert",
    "breaker.opened",
    "run.updated",
    "webhook.test",
]
EVENT_TYPES: Final[tuple[EventType, ...]] = get_args(EventType)

NOTIFICATION_TYPES: Final[tuple[EventType, ...]] = (
    "approval.requested",
    "approval.expiring",
    "run.failed",
    "budget.alert",
    "breaker.opened",
)
"""The events people act on: what webhooks subscribe to."""

STREAM_TYPES: Final[tuple[EventType, ...]] = (*NOTIFICATION_TYPES, "run.updated")
"""What the live stream sends: the notifications, and every change of a run (for pages that
show runs to refresh)."""

LOOKBACK: Final = 60.0
"""Seconds each scan reads before where the last one stopped (see the module's docstring)."""

EXPIRY_WARNING: Final = 900.0
"""`approval.expiring` comes this many seconds before an approval's deadline."""

BUDGET_KINDS: Final = ("budget.exceeded", "budget.soft_limit")


@dataclass(frozen=True, slots=True)
class Event:
    """Something a person may act on: what, in which tenant (None: every tenant), when."""

    event_id: str
    type: EventType
    tenant: str | None
    time: float
    data: dict[str, Any] = field(default_factory=dict)

    def body(self, tenant: str) -> dict[str, Any]:
        """The event as JSON, as the stream and webhooks send it to `tenant`."""
        return {
            "id": self.event_id,
            "type": self.type,
            "tenant": tenant,
            "time": iso(self.time),
            "data": self.data,
        }

    @property
    def order(self) -> tuple[float, str]:
        return (self.time, self.event_id)


def iso(timestamp: float) -> str:
    """A time as the API writes it: ISO 8601 in UTC, `2026-11-21T09:30:00Z`."""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat().replace("+00:00", "Z")


def check_types(types: Iterable[str], *, allowed: Collection[str]) -> list[EventType]:
    """`types` if each is one of `allowed`; ValueError naming the first that is not."""
    chosen: list[EventType] = []
    for name in types:
        if name not in allowed:
            raise ValueError(f"unknown event type {name!r}: use {', '.join(allowed)}")
        if name not in chosen:
            chosen.append(cast(EventType, name))
    return chosen


# -- detection ---------------------------------------------------------------------------------


def detect_events(
    *,
    since: float,
    until: float,
    now: float | None = None,
    tenant: str | None = None,
    types: Collection[str] = NOTIFICATION_TYPES,
    expiry_warning: float = EXPIRY_WARNING,
) -> Script[list[Event]]:
    """The events of `types` whose time is in [`since`, `until`], oldest first.

    Args:
        since: The window's start (a reader's last position minus `LOOKBACK`).
        until: Its end; events are never in the future, so at most `now`.
        now: The time now (default `until`): an approval whose deadline has passed gets no
            warning any more.
        tenant: Only this tenant's events (and every tenant's: breakers); None for all.
        types: Which types to read (each reads its own table).
        expiry_warning: How long before a deadline `approval.expiring` comes.
    """
    current = until if now is None else now
    redactor = _redactor(os.environ.get(SETTING, ""))
    found: list[Event] = []
    if "approval.requested" in types:
        made = yield from approvals_created_between(since, until, tenant=tenant)
        found += [_approval_event("approval.requested", a, a.created_at, redactor) for a in made]
    if "approval.expiring" in types:
        expiring = yield from approvals_expiring_between(
            since, until, warning=expiry_warning, now=current, tenant=tenant
        )
        for approval in expiring:
            assert approval.deadline is not None
            warned = approval.deadline - expiry_warning
            found.append(_approval_event("approval.expiring", approval, warned, redactor))
    if "run.failed" in types or "run.updated" in types:
        only_failed = "run.updated" not in types
        runs = yield from runs_updated_between(since, until, tenant=tenant, failed=only_failed)
        for run in runs:
            if run.status == "failed" and "run.failed" in types:
                found.append(_run_failed(run, redactor))
            if "run.updated" in types:
                found.append(_run_updated(run))
    if "budget.alert" in types:
        entries = yield from entries_between(BUDGET_KINDS, since, until, tenant=tenant)
        found += [_budget_alert(entry) for entry in entries]
    if "breaker.opened" in types:
        opened = yield from transitions_between(since, until, to_state="open")
        found += [_breaker_opened(transition) for transition in opened]
    found.sort(key=lambda event: event.order)
    return found


def runs_updated_between(
    since: float, until: float, *, tenant: str | None = None, failed: bool = False
) -> Script[list[RunRecord]]:
    """Runs whose last change was at `since` <= updated_at <= `until` (only failed ones with
    `failed`), oldest change first."""
    sql = f"SELECT {RUN_COLUMNS} FROM runs WHERE updated_at >= ? AND updated_at <= ?"
    params: tuple[Any, ...] = (since, until)
    if failed:
        sql += " AND status = 'failed'"
    if tenant is not None:
        sql += " AND tenant = ?"
        params += (tenant,)
    result = yield Statement(sql + " ORDER BY updated_at, run_id", params)
    return [run_from_row(row) for row in result.rows]


@functools.lru_cache(maxsize=4)
def _redactor(setting: str) -> Redactor:
    return Redactor.from_settings({SETTING: setting})


def _payload(text: str | None, redactor: Redactor) -> Any:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = text
    return redactor.redact_json(value)


def _approval_event(
    kind: Literal["approval.requested", "approval.expiring"],
    approval: ApprovalRequest,
    time: float,
    redactor: Redactor,
) -> Event:
    suffix = "" if kind == "approval.requested" else f":{approval.deadline:.3f}"
    return Event(
        event_id=f"{kind}:{approval.approval_id}{suffix}",
        type=kind,
        tenant=approval.tenant,
        time=time,
        data={
            "approval_id": approval.approval_id,
            "run_id": approval.run_id,
            "agent": approval.agent,
            "tool": approval.tool,
            "arguments": redactor.redact_json(approval.arguments),
            "reason": approval.reason,
            "policy": approval.policy,
            "rule": approval.rule,
            "approvers": list(approval.approvers),
            "deadline": None if approval.deadline is None else iso(approval.deadline),
            "status": approval.status,
            "link": f"/approvals/{approval.approval_id}",
        },
    )


def _run_failed(run: RunRecord, redactor: Redactor) -> Event:
    return Event(
        event_id=f"run.failed:{run.run_id}",
        type="run.failed",
        tenant=run.tenant,
        time=run.updated_at,
        data={
            "run_id": run.run_id,
            "workflow": run.workflow,
            "error": _payload(run.error, redactor),
            "parent_run_id": run.parent_run_id,
            "link": f"/runs/{run.run_id}",
        },
    )


def _run_updated(run: RunRecord) -> Event:
    return Event(
        event_id=f"run.updated:{run.run_id}:{run.updated_at:.6f}:{run.status}",
        type="run.updated",
        tenant=run.tenant,
        time=run.updated_at,
        data={
            "run_id": run.run_id,
            "workflow": run.workflow,
            "status": run.status,
            "link": f"/runs/{run.run_id}",
        },
    )


def _budget_alert(entry: AuditRecord) -> Event:
    decision = entry.decision_data
    reservation = entry.subject.removeprefix("reservation:")
    # A reservation is keyed by the step that made it: `<run_id>:<step seq>`.
    run_id, _, seq = reservation.rpartition(":")
    run = run_id if run_id and seq.isdigit() else None
    return Event(
        event_id=f"budget.alert:{entry.tenant}:{entry.seq}",
        type="budget.alert",
        tenant=entry.tenant,
        time=entry.at,
        data={
            "kind": "exceeded" if entry.kind == "budget.exceeded" else "soft_limit",
            "reservation_id": reservation,
            "run_id": run,
            "limits": decision.get("exceeded") or decision.get("crossed") or [],
            "link": None if run is None else f"/runs/{run}",
        },
    )


def _breaker_opened(transition: TransitionRow) -> Event:
    return Event(
        event_id=f"breaker.opened:{transition.transition_id}",
        type="breaker.opened",
        tenant=None,
        time=transition.at,
        data={
            "dependency": transition.dependency,
            "worker": transition.worker,
            "from_state": transition.from_state,
            "calls": transition.calls,
            "failures": transition.failures,
            "reason": transition.reason,
        },
    )


__all__ = [
    "EVENT_TYPES",
    "EXPIRY_WARNING",
    "LOOKBACK",
    "NOTIFICATION_TYPES",
    "STREAM_TYPES",
    "Event",
    "EventType",
    "check_types",
    "detect_events",
    "iso",
    "runs_updated_between",
]
