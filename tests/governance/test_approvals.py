"""Approval gates: durable requests, exactly-once decisions, deadlines and escalation."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from corral import Corral, RunContext, SignalTimeout, current_step
from corral.errors import InvalidInput, ToolArgumentsInvalid
from corral.governance.approvals import (
    AlreadyDecided,
    ApprovalDecision,
    ApprovalNotFound,
    ApprovalRequest,
    DeadlineOutcome,
    NotAuthorized,
    approval_id_for,
    arguments_hash,
    deadline_script,
    decide,
    get_approval,
    list_approvals,
    request_approval,
    signal_name,
)
from corral.governance.audit import AuditRecord, read_entries, record_hash
from corral.governance.documents import ApprovalSpec
from corral.store import Store
from corral.store.scripts import Dialect, Script, ScriptFactory, Statement
from corral.testing import FakeClock

TENANT = "default"
REFUND_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "order_id": {"type": "string"},
        "amount_cents": {"type": "integer", "minimum": 1},
    },
    "required": ["order_id", "amount_cents"],
    "additionalProperties": False,
}
REFUND = {"order_id": "A-1001", "amount_cents": 75_000}


# -- helpers -----------------------------------------------------------------------------------


def principal_row(
    name: str,
    *,
    roles: Sequence[str],
    groups: Sequence[str] = (),
    kind: str = "human",
    tenant: str = TENANT,
) -> ScriptFactory[None]:
    """A row of `principals` (the identity module's API is not used here on purpose)."""

    def script(dialect: Dialect) -> Script[None]:
        yield Statement(
            "INSERT INTO principals (tenant, name, kind, roles, groups, created_at)"
            " VALUES (?, ?, ?, ?, ?, 0)",
            (tenant, name, kind, json.dumps(list(roles)), json.dumps(list(groups))),
        )

    return script


async def add_principals(store: Store) -> None:
    await store.run_script(principal_row("ada", roles=["approver"], groups=["finance"]))
    await store.run_script(principal_row("root", roles=["admin"], groups=[]))
    await store.run_script(principal_row("lin", roles=["approver"], groups=["finance-leads"]))
    await store.run_script(principal_row("vic", roles=["viewer"], groups=["finance"]))
    await store.run_script(principal_row("ops", roles=["approver"], groups=["ops"]))
    await store.run_script(
        principal_row("bot", roles=["approver"], groups=["finance"], kind="service")
    )
    await store.run_script(principal_row("agent:refunds", roles=["admin"], groups=["finance"]))


def spec(**overrides: Any) -> ApprovalSpec:
    fields: dict[str, Any] = {"approvers": ["finance", "root"], "deadline": "1h"}
    fields.update(overrides)
    return ApprovalSpec.model_validate(fields)


async def new_request(
    corral: Corral,
    run_id: str,
    *,
    step_seq: int = 1,
    approval: ApprovalSpec | None = None,
    arguments: dict[str, Any] | None = None,
) -> ApprovalRequest:
    now = corral.clock.now()

    def script(dialect: Dialect) -> Script[ApprovalRequest]:
        return request_approval(
            tenant=TENANT,
            run_id=run_id,
            step_seq=step_seq,
            agent="refunds",
            tool="issue_refund",
            arguments=arguments if arguments is not None else REFUND,
            parameters=REFUND_SCHEMA,
            reason="Refunds over $500 are checked by finance.",
            policy="refunds",
            policy_version=3,
            rule="large-refunds-need-approval",
            spec=approval or spec(),
            now=now,
            dialect=dialect,
        )

    return await corral.store.run_script(script)


async def audit(store: Store, kind: str | None = None) -> list[AuditRecord]:
    records = await store.read_script(lambda dialect: read_entries(TENANT))
    return [record for record in records if kind is None or record.kind == kind]


async def fetch(store: Store, approval_id: str) -> ApprovalRequest:
    request = await store.read_script(lambda dialect: get_approval(approval_id))
    assert request is not None
    return request


@contextlib.asynccontextmanager
async def more_corrals(db_url: str, clock: FakeClock, count: int) -> AsyncIterator[list[Corral]]:
    """Other `Corral`s on the test's database: other connections, as other processes have."""
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Corral(db_url, clock=clock)) for _ in range(count)]


def gate_workflow(corral: Corral, approval: ApprovalSpec) -> Any:
    """A workflow that asks for approval in a step and waits for the decision, applying
    deadlines as the tool loop will: wait, on timeout apply the deadline, maybe wait again."""

    @corral.workflow(name="gate")
    async def gate(ctx: RunContext, arguments: dict[str, Any]) -> dict[str, Any]:
        async def ask() -> dict[str, Any]:
            step = current_step()
            assert step is not None
            now = corral.clock.now()

            def script(dialect: Dialect) -> Script[ApprovalRequest]:
                return request_approval(
                    tenant=TENANT,
                    run_id=step.run_id,
                    step_seq=step.seq,
                    agent="refunds",
                    tool="issue_refund",
                    arguments=arguments,
                    parameters=REFUND_SCHEMA,
                    reason="large refund",
                    policy="refunds",
                    policy_version=1,
                    rule="large",
                    spec=approval,
                    now=now,
                    dialect=dialect,
                )

            request = await corral.store.run_script(script)
            return {"request": request.model_dump(mode="json"), "now": now}

        asked = await ctx.step(ask, name="approval:request")
        request = ApprovalRequest.model_validate(asked["request"])
        timeout = None if request.deadline is None else request.deadline - asked["now"]
        while True:
            try:
                data = await ctx.wait_for_signal(signal_name(request.approval_id), timeout=timeout)
                return {"decision": data, "via": "signal"}
            except SignalTimeout:

                async def expire() -> dict[str, Any]:
                    now = corral.clock.now()
                    outcome = await corral.store.run_script(
                        deadline_script(request.approval_id, now=now)
                    )
                    return {"outcome": outcome.model_dump(mode="json"), "now": now}

                expired = await ctx.step(expire, name="approval:deadline")
                outcome = DeadlineOutcome.model_validate(expired["outcome"])
                if outcome.decision is not None:
                    return {"decision": outcome.decision.model_dump(mode="json"), "via": "deadline"}
                assert outcome.escalated_until is not None
                timeout = outcome.escalated_until - expired["now"]

    return gate


# -- requests and decisions --------------------------------------------------------------------


async def test_approving_resumes_the_waiting_run_with_the_decision(corral: Corral) -> None:
    await add_principals(corral.store)
    gate = gate_workflow(corral, spec())
    handle = await corral.start(gate, REFUND)
    await corral.run_until_idle()
    assert (await handle.get()).status == "waiting"

    [request] = await corral.store.read_script(lambda d: list_approvals(TENANT, "pending"))
    assert request.approval_id == approval_id_for(handle.run_id, 1)
    assert (request.tool, request.arguments, request.parameters) == (
        "issue_refund",
        REFUND,
        REFUND_SCHEMA,
    )
    assert request.arguments_hash == arguments_hash(REFUND)
    assert request.approvers == ("finance", "root")
    assert request.deadline == corral.clock.now() + 3600

    decision = await decide(
        corral, request.approval_id, approve=True, principal="ada", reason="verified by phone"
    )
    assert (decision.status, decision.decided_by, decision.edited) == ("approved", "ada", False)
    assert decision.arguments == REFUND
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    assert result["via"] == "signal"
    assert ApprovalDecision.model_validate(result["decision"]) == decision

    stored = await fetch(corral.store, request.approval_id)
    assert (stored.status, stored.decided_by, stored.decision_reason) == (
        "approved",
        "ada",
        "verified by phone",
    )
    assert stored.decision() == decision
    [asked] = await audit(corral.store, "approval.requested")
    assert asked.actor == "agent:refunds"
    assert asked.subject == f"approval:{request.approval_id}"
    assert asked.payload_ref == f"run:{handle.run_id}:1"
    assert asked.decision_data["arguments_hash"] == arguments_hash(REFUND)
    assert "A-1001" not in asked.decision  # the hash, never the arguments
    [decided] = await audit(corral.store, "approval.decided")
    assert decided.actor == "human:ada"
    assert decided.decision_data == {
        "status": "approved",
        "reason": "verified by phone",
        "edited": False,
        "arguments_hash": arguments_hash(REFUND),
        "approvers": ["finance", "root"],
        "tool": "issue_refund",
    }
    assert all(record_hash(r) == r.hash for r in await audit(corral.store))


async def test_a_request_is_made_once_per_step(corral: Corral) -> None:
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    first = await new_request(corral, handle.run_id)
    corral.clock.advance(10)  # type: ignore[attr-defined]
    again = await new_request(corral, handle.run_id)
    assert again == first  # the original deadline too
    assert len(await audit(corral.store, "approval.requested")) == 1
    other = await new_request(corral, handle.run_id, step_seq=7)
    assert other.approval_id != first.approval_id


async def test_rejecting_with_an_admin_and_reading_errors(corral: Corral) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id)
    with pytest.raises(ApprovalNotFound):
        await decide(corral, "nope", approve=True, principal="ada", reason="x")
    with pytest.raises(InvalidInput, match="reason"):
        await decide(corral, request.approval_id, approve=True, principal="ada", reason=" ")
    with pytest.raises(InvalidInput, match="only when approving"):
        await decide(
            corral,
            request.approval_id,
            approve=False,
            principal="ada",
            reason="no",
            edited_arguments=REFUND,
        )
    decision = await decide(
        corral, request.approval_id, approve=False, principal="root", reason="duplicate"
    )
    assert (decision.status, decision.arguments) == ("rejected", REFUND)
    with pytest.raises(AlreadyDecided, match="rejected by root at") as lost:
        await decide(corral, request.approval_id, approve=True, principal="ada", reason="late")
    assert lost.value.code == "already_decided"


async def test_edited_arguments_are_validated_and_bound_to_the_decision(corral: Corral) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id)

    async def edit(arguments: Any) -> ApprovalDecision:
        return await decide(
            corral,
            request.approval_id,
            approve=True,
            principal="ada",
            reason="capped",
            edited_arguments=arguments,
        )

    with pytest.raises(ToolArgumentsInvalid, match="amount_cents") as bad:
        await edit({"order_id": "A-1001", "amount_cents": "lots"})
    assert bad.value.ids["field"] == "amount_cents"
    with pytest.raises(ToolArgumentsInvalid, match=r"minimum|less than"):
        await edit({"order_id": "A-1001", "amount_cents": 0})
    with pytest.raises(ToolArgumentsInvalid, match="Additional properties"):
        await edit({**REFUND, "note": "x"})
    with pytest.raises(ToolArgumentsInvalid, match="JSON object"):
        await edit(["not", "an", "object"])
    assert (await fetch(corral.store, request.approval_id)).pending
    assert await corral.store.list_signals(handle.run_id) == []

    capped = {"order_id": "A-1001", "amount_cents": 40_000}
    decision = await edit(capped)
    assert (decision.arguments, decision.edited) == (capped, True)
    assert decision.arguments_hash == arguments_hash(capped) != request.arguments_hash
    stored = await fetch(corral.store, request.approval_id)
    assert stored.edited_arguments == capped
    assert stored.arguments == REFUND  # the original call stays on record
    [decided] = await audit(corral.store, "approval.decided")
    assert decided.decision_data["edited"] is True
    assert decided.decision_data["arguments_hash"] == arguments_hash(capped)


@pytest.mark.parametrize(
    ("principal", "why"),
    [
        ("vic", "role approver or admin"),
        ("ops", "approvers are finance, root"),
        ("agent:refunds", "agents never decide"),
        ("bot", "only humans"),
        ("mallory", "no principal 'mallory'"),
    ],
)
async def test_unauthorised_principals_are_refused(
    corral: Corral, principal: str, why: str
) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id)
    with pytest.raises(NotAuthorized, match=why) as refused:
        await decide(corral, request.approval_id, approve=True, principal=principal, reason="ok")
    assert refused.value.code == "not_authorized"
    assert (await fetch(corral.store, request.approval_id)).pending
    assert await corral.store.list_signals(handle.run_id) == []
    assert await audit(corral.store, "approval.decided") == []


async def test_a_principal_named_as_an_approver_may_decide(corral: Corral) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id, approval=spec(approvers=["ops"]))
    decision = await decide(corral, request.approval_id, approve=True, principal="ops", reason="k")
    assert decision.decided_by == "ops"


async def test_fifty_concurrent_decisions_exactly_one_wins(
    corral: Corral, db_url: str, clock: FakeClock
) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id)
    deciders = ["ada", "root"]
    async with more_corrals(db_url, clock, 4) as others:
        instances = [corral, *others]
        outcomes = await asyncio.gather(
            *(
                decide(
                    instances[n % len(instances)],
                    request.approval_id,
                    approve=n % 2 == 0,
                    principal=deciders[n % 2],
                    reason=f"decision {n}",
                )
                for n in range(50)
            ),
            return_exceptions=True,
        )
    won = [o for o in outcomes if isinstance(o, ApprovalDecision)]
    lost = [o for o in outcomes if isinstance(o, AlreadyDecided)]
    assert (len(won), len(lost)) == (1, 49), [o for o in outcomes if isinstance(o, Exception)]
    [winner] = won
    signals = await corral.store.list_signals(handle.run_id)
    assert [s.name for s in signals] == [signal_name(request.approval_id)]
    assert json.loads(signals[0].payload) == winner.model_dump(mode="json")
    [decided] = await audit(corral.store, "approval.decided")
    assert decided.decision_data["reason"] == winner.reason
    stored = await fetch(corral.store, request.approval_id)
    assert (stored.status, stored.decision_reason) == (winner.status, winner.reason)
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    assert result["decision"] == winner.model_dump(mode="json")


async def test_a_decision_for_a_finished_run_records_nothing(corral: Corral) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec()), REFUND)
    request = await new_request(corral, handle.run_id)
    await corral.cancel(handle.run_id)
    with pytest.raises(Exception, match="already cancelled"):
        await decide(corral, request.approval_id, approve=True, principal="ada", reason="ok")
    assert (await fetch(corral.store, request.approval_id)).pending
    assert await audit(corral.store, "approval.decided") == []


# -- deadlines ---------------------------------------------------------------------------------


async def test_a_deadline_that_rejects(corral: Corral, clock: FakeClock) -> None:
    await add_principals(corral.store)
    handle = await corral.start(gate_workflow(corral, spec(deadline="15m")), REFUND)
    await corral.run_until_idle()
    clock.advance(15 * 60 - 1)
    assert (await corral.run_until_idle()).claimed == 0
    clock.advance(1)
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    decision = ApprovalDecision.model_validate(result["decision"])
    assert result["via"] == "deadline"
    assert (decision.status, decision.decided_by, decision.arguments) == (
        "rejected",
        "corral:deadline",
        REFUND,
    )
    stored = await fetch(corral.store, decision.approval_id)
    assert stored.status == "expired"
    [expired] = await audit(corral.store, "approval.expired")
    assert expired.actor == "corral"
    assert expired.decision_data["status"] == "rejected"
    with pytest.raises(AlreadyDecided, match="expired by corral:deadline"):
        await decide(corral, decision.approval_id, approve=True, principal="ada", reason="late")


async def test_a_deadline_that_approves_with_the_original_arguments(
    corral: Corral, clock: FakeClock
) -> None:
    handle = await corral.start(
        gate_workflow(corral, spec(deadline="10m", on_deadline="approve")), REFUND
    )
    await corral.run_until_idle()
    clock.advance(600)
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    decision = ApprovalDecision.model_validate(result["decision"])
    assert (decision.status, decision.arguments, decision.edited) == ("approved", REFUND, False)
    assert decision.arguments_hash == arguments_hash(REFUND)
    assert (await fetch(corral.store, decision.approval_id)).status == "approved"


async def test_a_deadline_escalates_then_a_second_deadline_rejects(
    corral: Corral, clock: FakeClock
) -> None:
    await add_principals(corral.store)
    approval = spec(
        approvers=["finance"], deadline="1h", on_deadline="escalate", escalate_to=["finance-leads"]
    )
    handle = await corral.start(gate_workflow(corral, approval), REFUND)
    await corral.run_until_idle()
    approval_id = approval_id_for(handle.run_id, 1)
    clock.advance(3600)
    await corral.run_until_idle()
    assert (await handle.get()).status == "waiting"
    escalated = await fetch(corral.store, approval_id)
    assert (escalated.status, escalated.approvers, escalated.escalations) == (
        "pending",
        ("finance-leads",),
        1,
    )
    assert escalated.deadline == clock.now() + 3600
    [entry] = await audit(corral.store, "approval.escalated")
    assert entry.decision_data["to"] == ["finance-leads"]
    # The first approvers lost their say; the escalation group has it now.
    with pytest.raises(NotAuthorized, match="finance-leads"):
        await decide(corral, approval_id, approve=True, principal="ada", reason="late")

    clock.advance(3600)
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    decision = ApprovalDecision.model_validate(result["decision"])
    assert (decision.status, decision.decided_by) == ("rejected", "corral:deadline")
    assert "after an escalation" in decision.reason
    assert len(await audit(corral.store, "approval.expired")) == 1


async def test_the_escalation_group_can_decide(corral: Corral, clock: FakeClock) -> None:
    await add_principals(corral.store)
    approval = spec(
        approvers=["finance"],
        deadline="1h",
        on_deadline="escalate",
        escalate_to=["finance-leads"],
        escalation_deadline="10m",
    )
    handle = await corral.start(gate_workflow(corral, approval), REFUND)
    await corral.run_until_idle()
    approval_id = approval_id_for(handle.run_id, 1)
    clock.advance(3600)

    # The escalation deadline is passed by the caller (the approvals table does not keep it).
    outcome = await corral.store.run_script(
        deadline_script(approval_id, now=clock.now(), escalation_deadline=600)
    )
    assert outcome == DeadlineOutcome(escalated_until=clock.now() + 600)
    again = await corral.store.run_script(deadline_script(approval_id, now=clock.now()))
    assert again == outcome  # not yet due again: nothing changes
    decision = await decide(corral, approval_id, approve=True, principal="lin", reason="fine")
    await corral.run_until_idle()
    result = await handle.wait_for_result(timeout=5)
    assert result["decision"] == decision.model_dump(mode="json")


async def test_no_deadline_waits_for_ever(corral: Corral, clock: FakeClock) -> None:
    handle = await corral.start(gate_workflow(corral, spec(deadline=None)), REFUND)
    await corral.run_until_idle()
    request = await fetch(corral.store, approval_id_for(handle.run_id, 1))
    assert request.deadline is None
    clock.advance(10**7)
    outcome = await corral.store.run_script(deadline_script(request.approval_id, now=clock.now()))
    assert outcome == DeadlineOutcome()
    assert (await fetch(corral.store, request.approval_id)).pending


async def test_a_human_racing_the_deadline_gets_exactly_one_outcome(
    corral: Corral, db_url: str, clock: FakeClock
) -> None:
    await add_principals(corral.store)
    gate = gate_workflow(corral, spec())
    handles = [await corral.start(gate, REFUND) for _ in range(10)]
    requests = [
        await new_request(corral, handle.run_id, step_seq=n) for n, handle in enumerate(handles)
    ]
    clock.advance(3600)  # every deadline has passed; no run has observed it yet

    async def human(request: ApprovalRequest) -> ApprovalDecision | AlreadyDecided:
        try:
            return await decide(
                corral, request.approval_id, approve=True, principal="ada", reason="ok"
            )
        except AlreadyDecided as lost:
            return lost

    async def deadline(worker: Corral, request: ApprovalRequest) -> DeadlineOutcome:
        for _ in range(request.step_seq % 4):
            # Reads first, as a slower worker would: so that humans win some of the races.
            await worker.store.read_script(lambda dialect: get_approval(request.approval_id))
        return await worker.store.run_script(deadline_script(request.approval_id, now=clock.now()))

    async with more_corrals(db_url, clock, 1) as [worker]:
        # One race at a time: see the lead's note on PostgreSQL group-commit batches that hold
        # several scripts' row locks at once (a deadlock between two such batches).
        outcomes = [await asyncio.gather(human(r), deadline(worker, r)) for r in requests]
    for handle, request, (by_human, by_deadline) in zip(handles, requests, outcomes, strict=True):
        assert by_deadline.decision is not None
        stored = await fetch(corral.store, request.approval_id)
        if isinstance(by_human, ApprovalDecision):
            assert by_deadline.decision == by_human  # the deadline saw the human's decision
            assert stored.status == "approved"
            assert len(await corral.store.list_signals(handle.run_id)) == 1
        else:
            assert by_deadline.decision.decided_by == "corral:deadline"
            assert stored.status == "expired"
            assert await corral.store.list_signals(handle.run_id) == []
    decided = await audit(corral.store, "approval.decided")
    expired = await audit(corral.store, "approval.expired")
    assert len(decided) + len(expired) == 10
    subjects = [r.subject for r in decided + expired]
    assert len(set(subjects)) == 10
