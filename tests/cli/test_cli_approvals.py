"""`corral approvals list|show|approve|reject`, in-process, end to end with a waiting run."""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from corral import Corral, RunContext, current_step, workflow
from corral.governance.approvals import (
    ApprovalRequest,
    arguments_hash,
    get_approval,
    request_approval,
    signal_name,
)
from corral.governance.audit import read_entries
from corral.governance.documents import ApprovalSpec
from corral.store.scripts import Dialect, Script, Statement

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"order_id": {"type": "string"}, "amount_cents": {"type": "integer"}},
    "required": ["order_id", "amount_cents"],
    "additionalProperties": False,
}
REFUND = {"order_id": "A-1001", "amount_cents": 75_000}
SPEC = ApprovalSpec(approvers=("finance",), deadline=3600.0)


ctx_corral: list[Corral] = []
"""The Corral the workflow's steps use (set by `run_gate`)."""


@workflow(name="refund_gate")
async def refund_gate(ctx: RunContext, arguments: dict[str, Any]) -> dict[str, Any]:
    """Ask for approval in a step, wait for the decision, and return it."""
    corral = ctx_corral[0]

    async def ask() -> str:
        step = current_step()
        assert step is not None
        now = corral.clock.now()

        def script(dialect: Dialect) -> Script[ApprovalRequest]:
            return request_approval(
                tenant="default",
                run_id=step.run_id,
                step_seq=step.seq,
                agent="refunds",
                tool="issue_refund",
                arguments=arguments,
                parameters=SCHEMA,
                reason="Refunds over $500 are checked by finance.",
                policy="refunds",
                policy_version=2,
                rule="large-refunds-need-approval",
                spec=SPEC,
                now=now,
                dialect=dialect,
            )

        return (await corral.store.run_script(script)).approval_id

    approval_id = await ctx.step(ask, name="approval:request")
    decision: dict[str, Any] = await ctx.wait_for_signal(signal_name(approval_id))
    return decision


def principal(db_url: str, name: str, roles: list[str], groups: list[str]) -> None:
    def script(dialect: Dialect) -> Script[None]:
        yield Statement(
            "INSERT INTO principals (tenant, name, kind, roles, groups, created_at)"
            " VALUES ('default', ?, 'human', ?, ?, 0)",
            (name, json.dumps(roles), json.dumps(groups)),
        )

    async def add() -> None:
        async with Corral(db_url) as corral:
            await corral.store.run_script(script)

    asyncio.run(add())


def run_gate(db_url: str, run_id: str | None = None) -> tuple[str, Any]:
    """Start (or continue) a gate run until it waits; return its id and status or result."""

    async def go() -> tuple[str, Any]:
        async with Corral(db_url, workflows=[refund_gate]) as corral:
            ctx_corral[:] = [corral]
            handle = corral.handle(run_id) if run_id else await corral.start(refund_gate, REFUND)
            await corral.run_until_idle()
            run = await handle.get()
            if run.status == "succeeded":
                return handle.run_id, await handle.wait_for_result(timeout=5)
            return handle.run_id, run.status

    return asyncio.run(go())


def approval_of(db_url: str, run_id: str) -> ApprovalRequest:
    async def fetch() -> ApprovalRequest:
        async with Corral(db_url) as corral:
            [found] = await corral.store.read_script(_by_run(run_id))
            request = await corral.store.read_script(lambda d: get_approval(found))
            assert request is not None
            return request

    return asyncio.run(fetch())


def _by_run(run_id: str) -> Any:
    def factory(dialect: Dialect) -> Script[list[str]]:
        result = yield Statement("SELECT approval_id FROM approvals WHERE run_id = ?", (run_id,))
        return [row[0] for row in result.rows]

    return factory


def audit_kinds(db_url: str) -> list[str]:
    async def fetch() -> list[str]:
        async with Corral(db_url) as corral:
            records = await corral.store.read_script(lambda d: read_entries("default"))
            return [record.kind for record in records]

    return asyncio.run(fetch())


def waiting_gate(db_url: str) -> tuple[str, ApprovalRequest]:
    principal(db_url, "ada", ["approver"], ["finance"])
    principal(db_url, "vic", ["viewer"], ["finance"])
    run_id, status = run_gate(db_url)
    assert status == "waiting"
    return run_id, approval_of(db_url, run_id)


def test_list_and_show_give_the_exact_call(cli: Invoke, db_url: str) -> None:
    run_id, request = waiting_gate(db_url)
    listed = cli("approvals", "list").no_traceback()
    assert listed.exit_code == 0, listed.stderr
    assert request.approval_id in listed.stdout
    assert "issue_refund" in listed.stdout
    assert "finance" in listed.stdout

    data = cli("approvals", "list", "--json").json()["approvals"]
    assert [a["approval_id"] for a in data] == [request.approval_id]
    assert data[0]["arguments"] == REFUND
    assert data[0]["deadline"].endswith("Z")
    assert cli("approvals", "list", "--status", "approved", "--json").json() == {"approvals": []}
    assert len(cli("approvals", "list", "--status", "all", "--json").json()["approvals"]) == 1

    shown = cli("approvals", "show", request.approval_id).no_traceback()
    assert shown.exit_code == 0, shown.stderr
    for text in (
        "issue_refund",
        '"order_id": "A-1001"',
        '"amount_cents": 75000',
        arguments_hash(REFUND),
        "refunds@2, rule large-refunds-need-approval",
        "Refunds over $500 are checked by finance.",
        "finance",
        run_id,
        "reject",
    ):
        assert text in shown.stdout, text
    detail = cli("approvals", "show", request.approval_id, "--json").json()
    assert (detail["tool"], detail["arguments"], detail["status"]) == (
        "issue_refund",
        REFUND,
        "pending",
    )


def test_approving_resumes_the_run_and_a_second_decision_exits_1(cli: Invoke, db_url: str) -> None:
    run_id, request = waiting_gate(db_url)
    approved = cli(
        "--as",
        "ada",
        "approvals",
        "approve",
        request.approval_id,
        "--edit",
        '{"order_id": "A-1001", "amount_cents": 40000}',
        "--reason",
        "capped at $400",
    ).no_traceback()
    assert approved.exit_code == 0, approved.stderr
    assert f"approved {request.approval_id} with edited arguments as ada" in approved.stdout

    again = cli(
        "--as", "ada", "approvals", "reject", request.approval_id, "--reason", "changed my mind"
    ).no_traceback()
    assert again.exit_code == 1
    assert "already_decided" in again.stderr
    assert "approved by ada at" in again.stderr

    _, result = run_gate(db_url, run_id)
    assert result["status"] == "approved"
    assert result["arguments"] == {"order_id": "A-1001", "amount_cents": 40000}
    assert result["edited"] is True
    shown = cli("approvals", "show", request.approval_id, "--json").json()
    assert (shown["status"], shown["decided_by"], shown["decision_reason"]) == (
        "approved",
        "ada",
        "capped at $400",
    )
    assert audit_kinds(db_url) == ["approval.requested", "approval.decided"]


def test_reject_with_json_output(cli: Invoke, db_url: str) -> None:
    run_id, request = waiting_gate(db_url)
    rejected = cli(
        "--as", "ada", "approvals", "reject", request.approval_id, "-r", "dupe", "--json"
    ).no_traceback()
    assert rejected.exit_code == 0, rejected.stderr
    data = rejected.json()
    assert (data["status"], data["decided_by"], data["reason"]) == ("rejected", "ada", "dupe")
    assert data["decided_at"].endswith("Z")
    _, result = run_gate(db_url, run_id)
    assert result["status"] == "rejected"


def test_bad_input_unauthorised_and_unknown_ids_exit_2(cli: Invoke, db_url: str) -> None:
    _, request = waiting_gate(db_url)
    approval_id = request.approval_id

    viewer = cli("--as", "vic", "approvals", "approve", approval_id, "--reason", "ok")
    assert viewer.no_traceback().exit_code == 2
    assert "not_authorized" in viewer.stderr
    assert "role approver or admin" in viewer.stderr

    agent = cli("--as", "agent:refunds", "approvals", "approve", approval_id, "--reason", "ok")
    assert agent.no_traceback().exit_code == 2
    assert "agents never decide" in agent.stderr

    bad_edit = cli(
        "--as",
        "ada",
        "approvals",
        "approve",
        approval_id,
        "--edit",
        '{"order_id": "A-1001", "amount_cents": "lots"}',
        "--reason",
        "x",
    ).no_traceback()
    assert bad_edit.exit_code == 2
    assert "amount_cents" in bad_edit.stderr

    malformed = cli("--as", "ada", "approvals", "approve", approval_id, "--edit", "{", "-r", "x")
    assert malformed.no_traceback().exit_code == 2
    assert "--edit is not valid JSON" in malformed.stderr

    no_reason = cli("--as", "ada", "approvals", "approve", approval_id)
    assert no_reason.no_traceback().exit_code == 2
    assert "--reason" in no_reason.stderr

    unknown = cli("--as", "ada", "approvals", "approve", "no-such-id", "--reason", "x")
    assert unknown.no_traceback().exit_code == 2
    assert "approval_not_found" in unknown.stderr
    assert cli("approvals", "show", "no-such-id").exit_code == 2

    other_tenant = cli("--tenant", "globex", "approvals", "show", approval_id)
    assert other_tenant.no_traceback().exit_code == 2
    assert "tenant 'globex'" in other_tenant.stderr

    bad_status = cli("approvals", "list", "--status", "done")
    assert bad_status.no_traceback().exit_code == 2
    assert "pending" in bad_status.stderr

    # Nothing was decided by any of that.
    assert cli("approvals", "show", approval_id, "--json").json()["status"] == "pending"


def test_an_empty_list_says_so_and_help_has_examples(cli: Invoke) -> None:
    empty = cli("approvals", "list")
    assert empty.exit_code == 0
    assert "no pending approvals in tenant 'default'" in empty.stderr
    helped = cli("approvals", "--help")
    assert helped.exit_code == 0
    assert "corral approvals show APPROVAL_ID" in helped.stdout
    assert "already decided" in " ".join(helped.stdout.split())


def test_cancelling_a_run_withdraws_its_pending_approvals(cli: Invoke, db_url: str) -> None:
    run_id, request = waiting_gate(db_url)
    assert cli("runs", "cancel", run_id).exit_code == 2  # root is no principal here
    assert cli("--as", "ada", "runs", "cancel", run_id).exit_code == 0
    shown = cli("approvals", "show", request.approval_id, "--json").json()
    assert shown["status"] == "expired"
    assert shown["decision_reason"] == "the run was cancelled"
    assert cli("approvals", "list", "--json").json() == {"approvals": []}
    kinds = [e["kind"] for e in cli("--as", "vic", "audit", "list", "--json").json()["entries"]]
    assert kinds[0] == "approval.withdrawn"
