"""Approval gates: a tool call that waits, durably, for a human to approve, edit or reject it.

A `require_approval` decision (or a tool that asks for review) makes the run record a request
(`request_approval`, inside a journaled step) and wait for the signal `approval:<id>`
(`signal_name`). The request holds the *exact* call — tool, arguments, their canonical hash, and
the tool's JSON schema — never a model's summary of it.

A human decides with `decide` (or `corral approvals approve|reject`). The decision is made once:
the signal that resumes the run is sent with a guard script that moves the row from `pending` to
its outcome (a compare-and-set) and appends the `approval.decided` audit entry in the same
transaction, so of many concurrent decisions exactly one commits a row change, an audit entry
and a signal, and the rest get `AlreadyDecided`. The decision carries the arguments to call the
tool with (the approver's edited arguments, validated against the tool's schema, or the
original ones) and their hash, binding it to that exact call.

Deadlines run on the engine's durable timers: the waiting run's `wait_for_signal(..., timeout=)`
times out and the run calls `deadline_passed` in a journaled step. That is a compare-and-set too
(on `pending` and the deadline having passed), so a human decision racing the deadline has
exactly one outcome: whichever committed first. Until the waiting run observes the deadline, a
human decision still wins.

```python
request = await ctx.step(record_request, name="approval:request")   # request_approval(...)
try:
    data = await ctx.wait_for_signal(signal_name(request.approval_id), timeout=remaining)
    decision = ApprovalDecision.model_validate(data)
except SignalTimeout:
    outcome = await ctx.step(apply_deadline, name="approval:deadline")  # deadline_passed(...)
    # outcome.decision, or wait again until outcome.escalated_until
```
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import jsonschema
from pydantic import BaseModel, ConfigDict

from corral.engine import Corral
from corral.errors import AlreadyDecided as AlreadyDecided
from corral.errors import ApprovalNotFound as ApprovalNotFound
from corral.errors import ApprovalRejected as ApprovalRejected
from corral.errors import InvalidInput, ToolArgumentsInvalid
from corral.errors import NotAuthorized as NotAuthorized
from corral.governance.audit import AuditEntry, append, canonical_json
from corral.governance.documents import ApprovalSpec
from corral.governance.identity import get_principal
from corral.store.scripts import Dialect, Script, ScriptFactory, Statement

ApprovalStatus = Literal["pending", "approved", "rejected", "expired"]
APPROVAL_STATUSES: tuple[ApprovalStatus, ...] = ("pending", "approved", "rejected", "expired")

DEADLINE_ACTOR = "corral:deadline"
"""`decided_by` of a decision the deadline made."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://corral.dev/approvals")


# -- records -----------------------------------------------------------------------------------


class ApprovalRequest(BaseModel):
    """A row of the `approvals` table: the exact call, why it needs approval, and its state."""

    model_config = ConfigDict(frozen=True)

    approval_id: str
    tenant: str
    run_id: str
    step_seq: int
    agent: str | None
    tool: str
    arguments: dict[str, Any]
    arguments_hash: str
    parameters: dict[str, Any]
    """The tool's JSON schema: edited arguments must satisfy it."""
    reason: str
    policy: str | None
    policy_version: int | None
    rule: str | None
    approvers: tuple[str, ...]
    """Groups or principal names who may decide (after an escalation: the escalation group)."""
    deadline: float | None
    on_deadline: Literal["reject", "approve", "escalate"]
    escalate_to: tuple[str, ...]
    escalations: int
    status: ApprovalStatus
    decided_by: str | None
    decided_at: float | None
    decision_reason: str | None
    edited_arguments: dict[str, Any] | None
    created_at: float
    escalation_deadline: float | None = None
    """Seconds the escalated approvers get (None: the first deadline's length)."""

    @property
    def pending(self) -> bool:
        return self.status == "pending"

    def decision(self) -> ApprovalDecision | None:
        """The decision recorded on this row (None while pending)."""
        if self.status == "pending" or self.decided_by is None or self.decided_at is None:
            return None
        final = self.edited_arguments if self.edited_arguments is not None else self.arguments
        return ApprovalDecision(
            approval_id=self.approval_id,
            status="approved" if self.status == "approved" else "rejected",
            decided_by=self.decided_by,
            reason=self.decision_reason or "",
            arguments=final,
            edited=self.edited_arguments is not None,
            arguments_hash=arguments_hash(final),
            decided_at=self.decided_at,
        )


class ApprovalDecision(BaseModel):
    """The data of the signal that resumes the run: the outcome and the call to make."""

    model_config = ConfigDict(frozen=True)

    approval_id: str
    status: Literal["approved", "rejected"]
    decided_by: str
    """`<principal>` for a human, `corral:deadline` when the deadline decided."""
    reason: str
    arguments: dict[str, Any]
    """The arguments to call the tool with: the approver's edited ones, or the original ones."""
    edited: bool
    arguments_hash: str
    """The hash of `arguments` (the call this decision is bound to)."""
    decided_at: float

    @property
    def approved(self) -> bool:
        return self.status == "approved"


class DeadlineOutcome(BaseModel):
    """What `deadline_passed` did: a decision, or an escalation to wait for until a new time."""

    model_config = ConfigDict(frozen=True)

    decision: ApprovalDecision | None = None
    escalated_until: float | None = None
    """With no decision: wait again (for the escalated approvers) until this time; None with no
    decision means the request is still pending with no deadline."""


# -- helpers -----------------------------------------------------------------------------------


def arguments_hash(arguments: Mapping[str, Any]) -> str:
    """sha256 of the arguments' canonical JSON: what a decision is bound to."""
    return hashlib.sha256(canonical_json(dict(arguments)).encode()).hexdigest()


def approval_id_for(run_id: str, step_seq: int) -> str:
    """The id of the request a run's step makes: the same however often the step is retried."""
    return str(uuid.uuid5(_NAMESPACE, f"{run_id}:{step_seq}"))


def signal_name(approval_id: str) -> str:
    """The signal a run waits for to learn the decision on `approval_id`."""
    return f"approval:{approval_id}"


_COLUMNS = (
    "approval_id, tenant, run_id, step_seq, agent, tool, arguments, arguments_hash, parameters,"
    " reason, policy, policy_version, rule, approvers, deadline, on_deadline, escalate_to,"
    " escalations, status, decided_by, decided_at, decision_reason, edited_arguments, created_at,"
    " escalation_deadline"
)


def _request(row: Sequence[Any]) -> ApprovalRequest:
    return ApprovalRequest(
        approval_id=row[0],
        tenant=row[1],
        run_id=row[2],
        step_seq=int(row[3]),
        agent=row[4],
        tool=row[5],
        arguments=json.loads(row[6]),
        arguments_hash=row[7],
        parameters=json.loads(row[8]),
        reason=row[9],
        policy=row[10],
        policy_version=None if row[11] is None else int(row[11]),
        rule=row[12],
        approvers=tuple(json.loads(row[13])),
        deadline=None if row[14] is None else float(row[14]),
        on_deadline=row[15],
        escalate_to=tuple(json.loads(row[16])) if row[16] else (),
        escalations=int(row[17]),
        status=row[18],
        decided_by=row[19],
        decided_at=None if row[20] is None else float(row[20]),
        decision_reason=row[21],
        edited_arguments=None if row[22] is None else json.loads(row[22]),
        created_at=float(row[23]),
        escalation_deadline=None if row[24] is None else float(row[24]),
    )


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "an unknown time"
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _already_decided(request: ApprovalRequest) -> AlreadyDecided:
    return AlreadyDecided(
        f"approval {request.approval_id} was already {request.status} by "
        f"{request.decided_by or 'someone'} at {_when(request.decided_at)}",
        approval_id=request.approval_id,
        status=request.status,
        decided_by=request.decided_by,
        decided_at=request.decided_at,
    )


# -- scripts -----------------------------------------------------------------------------------


def get_approval(approval_id: str, *, lock: bool = False) -> Script[ApprovalRequest | None]:
    """The request `approval_id`, or None. `lock=True` adds `FOR UPDATE` (PostgreSQL only:
    pass it only from a script made for that dialect)."""
    suffix = " FOR UPDATE" if lock else ""
    result = yield Statement(
        f"SELECT {_COLUMNS} FROM approvals WHERE approval_id = ?{suffix}", (approval_id,)
    )
    row = result.one()
    return None if row is None else _request(row)


def list_approvals(
    tenant: str,
    status: ApprovalStatus | None = None,
    limit: int = 100,
    *,
    after: tuple[float, str] | None = None,
) -> Script[list[ApprovalRequest]]:
    """A tenant's requests, newest first, optionally only those in `status`; `after` (the
    `created_at` and `approval_id` of the last request of a page) continues a list."""
    sql = f"SELECT {_COLUMNS} FROM approvals WHERE tenant = ?"
    params: tuple[Any, ...] = (tenant,)
    if status is not None:
        sql += " AND status = ?"
        params += (status,)
    if after is not None:
        sql += " AND (created_at < ? OR (created_at = ? AND approval_id < ?))"
        params += (after[0], after[0], after[1])
    sql += " ORDER BY created_at DESC, approval_id DESC LIMIT ?"
    result = yield Statement(sql, (*params, limit))
    return [_request(row) for row in result.rows]


def request_approval(
    *,
    tenant: str,
    run_id: str,
    step_seq: int,
    agent: str | None,
    tool: str,
    arguments: Mapping[str, Any],
    parameters: Mapping[str, Any],
    reason: str,
    policy: str | None,
    policy_version: int | None,
    rule: str | None,
    spec: ApprovalSpec,
    now: float,
    dialect: Dialect,
) -> Script[ApprovalRequest]:
    """Record the request for the call a run's step `step_seq` wants to make; return it.

    Idempotent per (run_id, step_seq): a retried step gets the request it made the first time
    (with its original deadline). Audited as `approval.requested` (the arguments' hash, never
    the arguments: they stay in the approvals table and the journal).
    """
    approval_id = approval_id_for(run_id, step_seq)
    digest = arguments_hash(arguments)
    deadline = None if spec.deadline is None else now + spec.deadline
    yield Statement(
        f"INSERT INTO approvals ({_COLUMNS}) VALUES"
        " (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 'pending', NULL, NULL, NULL,"
        " NULL, ?, ?) ON CONFLICT DO NOTHING",
        (
            approval_id,
            tenant,
            run_id,
            step_seq,
            agent,
            tool,
            json.dumps(dict(arguments)),
            digest,
            json.dumps(dict(parameters)),
            reason,
            policy,
            policy_version,
            rule,
            json.dumps(list(spec.approvers)),
            deadline,
            spec.on_deadline,
            json.dumps(list(spec.escalate_to)),
            now,
            spec.escalation_deadline,
        ),
    )
    request = yield from get_approval(approval_id)
    assert request is not None
    yield from append(
        tenant,
        AuditEntry(
            kind="approval.requested",
            actor=f"agent:{agent}" if agent else "corral",
            subject=f"approval:{approval_id}",
            decision={
                "tool": request.tool,
                "arguments_hash": request.arguments_hash,
                "policy": request.policy,
                "version": request.policy_version,
                "rule": request.rule,
                "approvers": list(request.approvers),
                "deadline": request.deadline,
            },
            payload_ref=f"run:{run_id}:{step_seq}",
            dedupe_key=f"approval.requested:{approval_id}",
        ),
        at=now,
        dialect=dialect,
    )
    return request


def _authorize(request: ApprovalRequest, principal: str) -> Script[None]:
    """Raise NotAuthorized unless `principal` may decide `request` as it stands now."""
    refused = f"{principal!r} may not decide approval {request.approval_id}"
    if principal.startswith("agent:"):
        raise NotAuthorized(
            f"{refused}: agents never decide approvals",
            approval_id=request.approval_id,
            principal=principal,
        )
    found = yield from get_principal(request.tenant, principal)
    if found is None:
        raise NotAuthorized(
            f"{refused}: no principal {principal!r} in tenant {request.tenant!r}",
            approval_id=request.approval_id,
            principal=principal,
        )
    if found.kind != "human":
        raise NotAuthorized(
            f"{refused}: only humans decide approvals (it is a {found.kind})",
            approval_id=request.approval_id,
            principal=principal,
        )
    if not found.has_role("approver"):
        raise NotAuthorized(
            f"{refused}: it needs the role approver or admin (it has "
            f"{', '.join(found.roles) or 'none'})",
            approval_id=request.approval_id,
            principal=principal,
        )
    if not found.in_any(request.approvers):
        raise NotAuthorized(
            f"{refused}: the approvers are {', '.join(request.approvers)}, and it is in none of"
            f" them (its groups: {', '.join(found.groups) or 'none'})",
            approval_id=request.approval_id,
            principal=principal,
        )


def _record_decision(
    decision: ApprovalDecision,
    *,
    principal: str,
    edited_arguments: dict[str, Any] | None,
    dialect: Dialect,
) -> Script[ApprovalRequest]:
    """The guard of the decision's signal: authorise, compare-and-set, audit — or raise."""
    request = yield from get_approval(decision.approval_id, lock=dialect == "postgresql")
    if request is None:
        raise ApprovalNotFound(
            f"no approval {decision.approval_id!r}", approval_id=decision.approval_id
        )
    if not request.pending:
        raise _already_decided(request)
    # Checked again under the row's lock: an escalation may have changed the approvers since.
    yield from _authorize(request, principal)
    changed = yield Statement(
        "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ?,"
        " edited_arguments = ? WHERE approval_id = ? AND status = 'pending'",
        (
            decision.status,
            decision.decided_by,
            decision.decided_at,
            decision.reason,
            None if edited_arguments is None else json.dumps(edited_arguments),
            decision.approval_id,
        ),
    )
    if changed.rowcount == 0:
        current = yield from get_approval(decision.approval_id)
        assert current is not None
        raise _already_decided(current)
    yield from append(
        request.tenant,
        AuditEntry(
            kind="approval.decided",
            actor=f"human:{principal}",
            subject=f"approval:{request.approval_id}",
            decision={
                "status": decision.status,
                "reason": decision.reason,
                "edited": decision.edited,
                "arguments_hash": decision.arguments_hash,
                "approvers": list(request.approvers),
                "tool": request.tool,
            },
            payload_ref=f"run:{request.run_id}:{request.step_seq}",
            dedupe_key=f"approval.decided:{request.approval_id}",
        ),
        at=decision.decided_at,
        dialect=dialect,
    )
    return request


def _validate_edit(request: ApprovalRequest, edited: Any) -> dict[str, Any]:
    if not isinstance(edited, dict):
        raise ToolArgumentsInvalid(
            f"approval {request.approval_id}: the edited arguments of {request.tool!r} must be a"
            f" JSON object, not {type(edited).__name__}",
            approval_id=request.approval_id,
            tool=request.tool,
        )
    try:
        validator_class = jsonschema.validators.validator_for(request.parameters)
        validator = validator_class(request.parameters)
        errors = sorted(validator.iter_errors(edited), key=lambda e: list(e.absolute_path))
    except jsonschema.SchemaError as exc:
        raise ToolArgumentsInvalid(
            f"approval {request.approval_id}: the tool {request.tool!r} has an invalid schema, so"
            f" edited arguments cannot be checked: {exc.message}",
            approval_id=request.approval_id,
            tool=request.tool,
        ) from None
    if errors:
        first = errors[0]
        field = ".".join(str(part) for part in first.absolute_path) or "(the arguments)"
        raise ToolArgumentsInvalid(
            f"approval {request.approval_id}: edited arguments of {request.tool!r} are invalid"
            f" at {field}: {first.message}",
            approval_id=request.approval_id,
            tool=request.tool,
            field=field,
        )
    return edited


async def decide(
    corral: Corral,
    approval_id: str,
    *,
    approve: bool,
    principal: str,
    reason: str,
    edited_arguments: dict[str, Any] | None = None,
) -> ApprovalDecision:
    """Approve (optionally with edited arguments) or reject a pending request, exactly once.

    Raises `ApprovalNotFound`, `NotAuthorized` (not a human approver of this request, or an
    `agent:` principal), `AlreadyDecided` (someone — or the deadline — decided first),
    `ToolArgumentsInvalid` (edited arguments failing the tool's schema, naming the field),
    `InvalidInput` (no reason; edits on a rejection), and the engine's `RunAlreadyFinished`
    if the waiting run has ended (then nothing is recorded).
    """
    found = await corral.store.read_script(lambda dialect: get_approval(approval_id))
    if found is None:
        raise ApprovalNotFound(f"no approval {approval_id!r}", approval_id=approval_id)
    request = found
    if not reason.strip():
        raise InvalidInput(
            f"approval {approval_id}: give a reason for the decision", approval_id=approval_id
        )
    if edited_arguments is not None and not approve:
        raise InvalidInput(
            f"approval {approval_id}: arguments can be edited only when approving",
            approval_id=approval_id,
        )
    if not request.pending:
        raise _already_decided(request)
    # Authorise before validating, so a refused principal learns nothing about the schema.
    await corral.store.read_script(lambda dialect: _authorize(request, principal))
    edited = None if edited_arguments is None else _validate_edit(request, edited_arguments)
    final = edited if edited is not None else request.arguments
    decision = ApprovalDecision(
        approval_id=approval_id,
        status="approved" if approve else "rejected",
        decided_by=principal,
        reason=reason,
        arguments=final,
        edited=edited is not None,
        arguments_hash=arguments_hash(final),
        decided_at=corral.clock.now(),
    )

    def guard(dialect: Dialect) -> Script[ApprovalRequest]:
        return _record_decision(
            decision, principal=principal, edited_arguments=edited, dialect=dialect
        )

    await corral.signal(
        request.run_id, signal_name(approval_id), decision.model_dump(mode="json"), guard=guard
    )
    return decision


def deadline_passed(
    approval_id: str,
    *,
    now: float,
    dialect: Dialect,
    escalation_deadline: float | None = None,
) -> Script[DeadlineOutcome]:
    """Apply the request's deadline policy, if it is still pending and its deadline has passed.

    For the waiting run, in a journaled step, when its wait for the decision timed out:
    `reject` (stored as `expired`, decided by `corral:deadline`), `approve` (with the original
    arguments), or `escalate` (the approvers become `escalate_to`, with a new deadline
    `escalation_deadline` — or the original deadline's length — from `now`; a deadline after an
    escalation rejects). A request decided meanwhile returns that decision; one whose deadline
    has not come (clocks of two hosts) returns `escalated_until=deadline`: wait until then.
    """
    request = yield from get_approval(approval_id, lock=dialect == "postgresql")
    if request is None:
        raise ApprovalNotFound(f"no approval {approval_id!r}", approval_id=approval_id)
    if not request.pending:
        return DeadlineOutcome(decision=request.decision())
    if request.deadline is None or request.deadline > now:
        return DeadlineOutcome(escalated_until=request.deadline)
    subject = f"approval:{approval_id}"
    payload_ref = f"run:{request.run_id}:{request.step_seq}"
    escalate = (
        request.on_deadline == "escalate" and request.escalations == 0 and bool(request.escalate_to)
    )
    if escalate:
        length = escalation_deadline or request.escalation_deadline
        if length is None:
            length = request.deadline - request.created_at
        until = now + length
        changed = yield Statement(
            "UPDATE approvals SET approvers = ?, deadline = ?, escalations = escalations + 1"
            " WHERE approval_id = ? AND status = 'pending' AND deadline <= ?",
            (json.dumps(list(request.escalate_to)), until, approval_id, now),
        )
        if changed.rowcount == 0:
            return (yield from _current_outcome(approval_id))
        yield from append(
            request.tenant,
            AuditEntry(
                kind="approval.escalated",
                actor="corral",
                subject=subject,
                decision={
                    "from": list(request.approvers),
                    "to": list(request.escalate_to),
                    "deadline": until,
                    "escalation": request.escalations + 1,
                },
                payload_ref=payload_ref,
                dedupe_key=f"approval.escalated:{approval_id}:{request.escalations + 1}",
            ),
            at=now,
            dialect=dialect,
        )
        return DeadlineOutcome(escalated_until=until)
    approve = request.on_deadline == "approve"
    status: ApprovalStatus = "approved" if approve else "expired"
    why = (
        f"the deadline passed at {_when(request.deadline)}"
        + (" after an escalation" if request.escalations else "")
        + ("; approved by policy" if approve else "; rejected by policy")
    )
    changed = yield Statement(
        "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, decision_reason = ?"
        " WHERE approval_id = ? AND status = 'pending' AND deadline <= ?",
        (status, DEADLINE_ACTOR, now, why, approval_id, now),
    )
    if changed.rowcount == 0:
        return (yield from _current_outcome(approval_id))
    yield from append(
        request.tenant,
        AuditEntry(
            kind="approval.expired",
            actor="corral",
            subject=subject,
            decision={
                "status": "approved" if approve else "rejected",
                "on_deadline": request.on_deadline,
                "deadline": request.deadline,
                "escalations": request.escalations,
                "arguments_hash": request.arguments_hash,
                "approvers": list(request.approvers),
            },
            payload_ref=payload_ref,
            dedupe_key=f"approval.expired:{approval_id}",
        ),
        at=now,
        dialect=dialect,
    )
    decided = yield from get_approval(approval_id)
    assert decided is not None
    return DeadlineOutcome(decision=decided.decision())


def _current_outcome(approval_id: str) -> Script[DeadlineOutcome]:
    current = yield from get_approval(approval_id)
    assert current is not None
    if current.pending:
        return DeadlineOutcome(escalated_until=current.deadline)
    return DeadlineOutcome(decision=current.decision())


def deadline_script(
    approval_id: str, *, now: float, escalation_deadline: float | None = None
) -> ScriptFactory[DeadlineOutcome]:
    """`deadline_passed` as a factory for `store.run_script` (it picks the dialect)."""

    def factory(dialect: Dialect) -> Script[DeadlineOutcome]:
        return deadline_passed(
            approval_id, now=now, escalation_deadline=escalation_deadline, dialect=dialect
        )

    return factory


def withdraw_for_run(
    run_id: str, *, actor: str, reason: str, now: float, dialect: Dialect
) -> Script[int]:
    """Withdraw the pending requests of a run that will never resume (cancelled): they become
    `expired`, decided by `actor`, and are audited; returns how many."""
    pending = yield Statement(
        "SELECT approval_id, tenant FROM approvals WHERE run_id = ? AND status = 'pending'",
        (run_id,),
    )
    for approval_id, tenant in pending.rows:
        yield Statement(
            "UPDATE approvals SET status = 'expired', decided_by = ?, decided_at = ?,"
            " decision_reason = ? WHERE approval_id = ? AND status = 'pending'",
            (actor, now, reason, approval_id),
        )
        yield from append(
            tenant,
            AuditEntry(
                kind="approval.withdrawn",
                actor=actor,
                subject=f"approval:{approval_id}",
                decision={"reason": reason},
                payload_ref=f"run:{run_id}",
            ),
            at=now,
            dialect=dialect,
        )
    return len(pending.rows)


def approvals_created_between(
    since: float, until: float, *, tenant: str | None = None
) -> Script[list[ApprovalRequest]]:
    """Requests made at `since` <= created_at <= `until` (of one tenant, or of all), oldest
    first, whatever their status now."""
    sql = f"SELECT {_COLUMNS} FROM approvals WHERE created_at >= ? AND created_at <= ?"
    params: tuple[Any, ...] = (since, until)
    if tenant is not None:
        sql += " AND tenant = ?"
        params += (tenant,)
    result = yield Statement(sql + " ORDER BY created_at, approval_id", params)
    return [_request(row) for row in result.rows]


def approvals_expiring_between(
    since: float, until: float, *, warning: float, now: float, tenant: str | None = None
) -> Script[list[ApprovalRequest]]:
    """Pending requests whose deadline comes `warning` seconds after a time in [`since`,
    `until`] and is still ahead of `now`, leaving out those made less than `warning` before
    their deadline (their request already said how little time there is)."""
    sql = (
        f"SELECT {_COLUMNS} FROM approvals WHERE status = 'pending' AND deadline >= ?"
        " AND deadline <= ? AND deadline > ? AND deadline - created_at > ?"
    )
    params: tuple[Any, ...] = (since + warning, until + warning, now, warning)
    if tenant is not None:
        sql += " AND tenant = ?"
        params += (tenant,)
    result = yield Statement(sql + " ORDER BY deadline, approval_id", params)
    return [_request(row) for row in result.rows]
