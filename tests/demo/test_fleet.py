"""The support fleet under its governance policy: every ticket end to end on both backends, whole
step sequences, the approval gate on the large refund, the refund ledger, and `corral demo` as a
real process (a worker killed mid-refund; every worker stopped and restarted before the approval).
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.agents import Agent
from corral.demo.fleet import AGENTS, POLICY_FILE, TicketOutcome, handle_ticket
from corral.demo.support_data import TICKETS, ticket
from corral.demo.support_tools import LEDGER_ENV, PACE_ENV, ledger_entries
from corral.governance import approvals, identity
from corral.governance.approvals import ApprovalRequest
from corral.governance.policy_store import apply_policy
from corral.store.scripts import Dialect, Script
from corral.tools import Tool

REPO_ROOT = Path(__file__).resolve().parents[2]

EXPECTED: dict[str, tuple[str, list[str], int | None]] = {
    # ticket → (route, specialists consulted, refund in cents or None)
    "T-1001": ("order_status", ["order_lookup"], None),
    "T-1002": ("refund", ["order_lookup", "policy_check", "refunds"], 3850),
    "T-1003": ("refund", ["order_lookup", "policy_check", "refunds"], 124900),  # once approved
    "T-1004": ("policy", ["policy_check"], None),
    "T-1005": ("escalation", ["order_lookup", "policy_check", "refunds"], 999),
    "T-1006": ("refund", ["order_lookup", "policy_check"], None),
}

SUPERVISED_REFUND = [
    ("step", "model:support_supervisor"),
    ("child.start", "agent:order_lookup"),  # the two look-ups are asked for in one turn…
    ("child.result", "agent:order_lookup"),
    ("child.start", "agent:policy_check"),  # …and run in parallel as child runs
    ("child.result", "agent:policy_check"),
    ("step", "model:support_supervisor"),
    ("child.start", "agent:refunds"),
    ("child.result", "agent:refunds"),
    ("step", "model:support_supervisor"),
]


@pytest.fixture(autouse=True)
def ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ledger of the test's own, and tools without simulated latency."""
    path = tmp_path / "refunds.db"
    monkeypatch.setenv(LEDGER_ENV, str(path))
    monkeypatch.setenv(PACE_ENV, "0")
    return path


@pytest.fixture
async def fleet(corral: Corral) -> Corral:
    """The store as `corral demo` sets it up: the fleet's policy applied, finn in finance."""
    await apply_policy(
        corral.store,
        corral.tenant,
        POLICY_FILE.read_text(encoding="utf-8"),
        source=str(POLICY_FILE),
        actor="human:ada",
        now=corral.clock.now(),
    )
    finn = identity.Principal(
        tenant=corral.tenant, name="finn", roles=("approver",), groups=("finance",)
    )

    def script(dialect: Dialect) -> Script[identity.Principal]:
        return (
            yield from identity.add_principal(
                finn, actor="human:ada", now=corral.clock.now(), dialect=dialect
            )
        )

    await corral.store.run_script(script)
    return corral


async def approval_requests(corral: Corral, status: str | None = None) -> list[ApprovalRequest]:
    return await corral.store.read_script(
        lambda d: approvals.list_approvals(corral.tenant, status)  # type: ignore[arg-type]
    )


async def approve_all(corral: Corral) -> list[ApprovalRequest]:
    """Approve every pending request as finn (what the demo does with the CLI)."""
    pending = await approval_requests(corral, "pending")
    for request in pending:
        await approvals.decide(
            corral, request.approval_id, approve=True, principal="finn", reason="receipt checked"
        )
    await corral.run_until_idle()
    return pending


async def handle(corral: Corral, ticket_id: str) -> tuple[str, TicketOutcome]:
    """Run a ticket to the end, approving the calls that wait for finance."""
    started = await corral.start(handle_ticket, ticket(ticket_id))
    await corral.run_until_idle()
    run = await corral.get_run(started.run_id)
    if run.status == "waiting":  # stopped at an approval gate
        await approve_all(corral)
        run = await corral.get_run(started.run_id)
    assert run.status == "succeeded", run.error
    return started.run_id, TicketOutcome.model_validate(json.loads(run.result or ""))


async def journal(corral: Corral, run_id: str) -> list[tuple[str, str]]:
    records = await corral.journal(run_id)
    assert all(r.status == "succeeded" for r in records), records
    return [(r.kind, r.name) for r in records]


async def child(corral: Corral, run_id: str, workflow: str) -> str:
    children = [c for c in await corral.list_runs(parent_run_id=run_id) if c.workflow == workflow]
    assert len(children) == 1, children
    return children[0].run_id


def test_every_agent_holds_exactly_the_scopes_its_tools_and_delegates_need() -> None:
    def needed(agent: Agent[Any]) -> set[str]:
        scopes = {s for t in agent.tools if isinstance(t, Tool) for s in t.definition.scopes}
        for delegate in agent.delegates:  # a child run never has more than its parent
            scopes |= needed(delegate)
        return scopes

    granted = {agent.name: set(agent.scopes) for agent in AGENTS}
    assert granted == {agent.name: needed(agent) for agent in AGENTS}
    assert granted["support_supervisor"] == {"orders:read", "policies:read", "payments:refund"}
    assert granted["reply_drafting"] == granted["reply_review"] == set()
    assert granted["triage_classifier"] == set()


@pytest.mark.parametrize("ticket_id", sorted(EXPECTED))
async def test_each_ticket_is_routed_resolved_and_answered(fleet: Corral, ticket_id: str) -> None:
    _, outcome = await handle(fleet, ticket_id)
    route, specialists, refund = EXPECTED[ticket_id]
    assert (outcome.route, outcome.specialists) == (route, specialists)
    assert (outcome.refund.amount_cents if outcome.refund else None) == refund
    assert outcome.reply.approved
    assert outcome.reply.subject.endswith(f"[{ticket_id}]")
    assert "scripted model — deterministic, no API key" in outcome.reply.body
    assert outcome.model == "scripted model — deterministic, no API key"
    # Only the large refund stopped at the approval gate, and finn approved it.
    approved = [r.arguments["order_id"] for r in await approval_requests(fleet, "approved")]
    assert approved == (["A-1003"] if ticket_id == "T-1003" else [])
    assert bool(outcome.approval) == (ticket_id == "T-1003")


async def test_the_large_refund_waits_for_finance_and_runs_once_when_approved(
    fleet: Corral, ledger: Path
) -> None:
    started = await fleet.start(handle_ticket, ticket("T-1003"))
    await fleet.run_until_idle()
    assert (await fleet.get_run(started.run_id)).status == "waiting"
    assert ledger_entries(ledger) == []  # nothing was refunded: the call never started
    supervisor = await child(fleet, started.run_id, "agent:support_supervisor")
    refunds = await child(fleet, supervisor, "agent:refunds")
    (pending,) = await approval_requests(fleet, "pending")
    # The request is the exact call, bound to the refunds run and the policy rule that asked.
    assert (pending.run_id, pending.agent, pending.tool) == (refunds, "refunds", "issue_refund")
    assert pending.arguments == {
        "order_id": "A-1003",
        "amount_cents": 124900,
        "reason": "changed_mind",
    }
    assert (pending.policy, pending.rule) == ("support", "large-refunds-need-approval")
    assert pending.approvers == ("finance",)

    await approve_all(fleet)
    run = await fleet.get_run(started.run_id)
    assert run.status == "succeeded", run.error
    outcome = TicketOutcome.model_validate(json.loads(run.result or ""))
    assert outcome.refund is not None
    assert outcome.refund.amount_cents == 124900
    assert "$1,249.00" in outcome.approval
    assert "$1,249.00" in outcome.reply.body
    assert await journal(fleet, refunds) == [
        ("step", "model:refunds"),
        ("step", "tool:issue_refund"),  # returned "approval required": nothing ran
        ("step", "approval:issue_refund"),
        ("signal", approvals.signal_name(pending.approval_id)),
        ("step", "tool:issue_refund"),  # the approved call
        ("step", "model:refunds"),
    ]
    assert await journal(fleet, supervisor) == SUPERVISED_REFUND
    (entry,) = ledger_entries(ledger)
    assert (entry.order_id, entry.amount_cents, entry.requests) == ("A-1003", 124900, 1)
    (decided,) = await approval_requests(fleet, "approved")
    assert (decided.decided_by, decided.decision_reason) == ("finn", "receipt checked")


async def test_a_damaged_item_goes_through_the_supervisor_step_by_step(fleet: Corral) -> None:
    corral = fleet
    run_id, outcome = await handle(corral, "T-1002")
    assert await journal(corral, run_id) == [
        ("step", "model:triage_classifier"),  # no rule matched: the classifier decides
        ("step", "route:triage"),
        ("child.start", "agent:support_supervisor"),
        ("child.result", "agent:support_supervisor"),
        ("step", "model:reply_drafting"),  # the reply pipeline, inline
        ("step", "model:reply_review"),
    ]
    supervisor = await child(corral, run_id, "agent:support_supervisor")
    assert await journal(corral, supervisor) == SUPERVISED_REFUND
    refunds = await child(corral, supervisor, "agent:refunds")
    assert await journal(corral, refunds) == [
        ("step", "model:refunds"),
        ("step", "tool:issue_refund"),
        ("step", "model:refunds"),
    ]
    issued = (await corral.journal(refunds))[1]
    assert outcome.refund is not None
    assert outcome.refund.idempotency_key == issued.idempotency_key
    assert "$38.50" in outcome.reply.body
    assert outcome.refund.refund_id in outcome.reply.body


async def test_an_angry_customer_is_escalated_by_a_rule_without_a_model_call(
    fleet: Corral,
) -> None:
    corral = fleet
    run_id, outcome = await handle(corral, "T-1005")
    assert await journal(corral, run_id) == [
        ("step", "route:triage"),
        ("child.start", "agent:support_supervisor"),
        ("child.result", "agent:support_supervisor"),
        ("step", "model:reply_drafting"),
        ("step", "model:reply_review"),
    ]
    supervisor = await child(corral, run_id, "agent:support_supervisor")
    assert await journal(corral, supervisor) == SUPERVISED_REFUND
    assert outcome.reply.body.startswith("Hi Linus,\n\nI'm sorry")


async def test_an_order_question_goes_straight_to_the_order_desk(fleet: Corral) -> None:
    corral = fleet
    run_id, outcome = await handle(corral, "T-1001")
    assert await journal(corral, run_id) == [
        ("step", "model:triage_classifier"),
        ("step", "route:triage"),
        ("child.start", "agent:order_lookup"),
        ("child.result", "agent:order_lookup"),
        ("step", "model:reply_drafting"),
        ("step", "model:reply_review"),
    ]
    lookup = await child(corral, run_id, "agent:order_lookup")
    assert await journal(corral, lookup) == [
        ("step", "model:order_lookup"),
        ("step", "tool:lookup_order"),
        ("step", "model:order_lookup"),
    ]
    assert "PW-88213" in outcome.reply.body


async def test_the_ledger_holds_one_refund_per_refunded_ticket(fleet: Corral, ledger: Path) -> None:
    corral = fleet
    handles = {t.ticket_id: await corral.start(handle_ticket, t) for t in TICKETS}
    await corral.run_until_idle()
    statuses = {t: (await corral.get_run(h.run_id)).status for t, h in handles.items()}
    assert statuses == {t: "waiting" if t == "T-1003" else "succeeded" for t in handles}
    assert sorted(e.order_id for e in ledger_entries(ledger)) == ["A-1002", "A-1005"]
    (approved,) = await approve_all(corral)
    assert approved.arguments["order_id"] == "A-1003"
    for started in handles.values():
        assert (await corral.get_run(started.run_id)).status == "succeeded"
    entries = ledger_entries(ledger)
    assert sorted((e.order_id, e.amount_cents) for e in entries) == [
        ("A-1002", 3850),
        ("A-1003", 124900),
        ("A-1005", 999),
    ]
    assert [e.requests for e in entries] == [1, 1, 1]  # nothing crashed: one request each


@dataclass(frozen=True)
class DemoRun:
    """One `corral demo` process on a database of its own, and what it printed."""

    url: str
    directory: Path
    returncode: int
    out: str
    err: str

    def ledger(self) -> list[tuple[str, int]]:
        """(order id, requests) per refund in the ledger beside the database."""
        with sqlite3.connect(self.directory / "demo-refunds.db") as conn:
            rows = conn.execute(
                "SELECT r.order_id, COUNT(*) FROM refunds r JOIN requests q"
                " ON q.idempotency_key = r.idempotency_key GROUP BY r.idempotency_key"
                " ORDER BY r.order_id"
            ).fetchall()
        conn.close()
        return [(order_id, count) for order_id, count in rows]


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoRun:
    """`corral demo` run once for the tests below (it takes ~15 s: real workers, real CLI)."""
    directory = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{directory / 'demo.db'}"
    env: dict[str, Any] = {
        k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k != "PYTHONPATH"
    }
    env.update({"PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", "CORRAL_ALLOW_NETWORK_MODELS": "0"})
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", "--database-url", url, "demo"],
        cwd=directory,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    return DemoRun(url, directory, done.returncode, done.stdout, done.stderr)


def test_corral_demo_runs_the_fleet_through_a_killed_worker(demo: DemoRun) -> None:
    out = demo.out
    assert demo.returncode == 0, out + demo.err
    assert "scripted model — deterministic, no API key" in out
    assert "killed with SIGKILL" in out
    assert "as a replacement" in out
    assert "6 of 6 tickets handled" in out
    assert "3 refund(s) applied for 3 refunded ticket(s)" in out
    assert f"corral --database-url '{demo.url}' runs show " in out
    for t in TICKETS:
        assert f"{t.ticket_id} {t.subject} — route {EXPECTED[t.ticket_id][0]};" in out
    # The ledger beside the database: every refund once, whatever was requested twice.
    requests = dict(demo.ledger())
    assert sorted(requests) == ["A-1002", "A-1003", "A-1005"]
    # In flight when its worker was killed: sent again with the same key (one or both small ones).
    assert max(requests.values()) == 2
    assert "requested twice" in out


def test_corral_demo_stops_the_large_refund_until_finance_approves(demo: DemoRun) -> None:
    out = demo.out
    assert demo.returncode == 0, out + demo.err
    flag = f"corral --database-url '{demo.url}'"
    # Governance is set up with the real CLI before the fleet starts.
    setup = [
        f"$ {flag} --as ada principals add ada --role admin",
        f"$ {flag} --as ada principals add finn --role approver --group finance",
        f"$ {flag} --as ada policy apply ",
        "applied policy support: version 1 is active",
        "Started 6 tickets",
    ]
    positions = [out.index(line) for line in setup]
    assert positions == sorted(positions)
    # T-1003 waits at the gate while the others finish; finance sees the exact call.
    gate = re.search(r"T-1003 waits for approval (\S+) by finance: issue_refund \$1,249\.00", out)
    assert gate, out
    approval_id = gate.group(1)
    assert "waiting for approval" in out  # the table's status column
    steps = [
        f"$ {flag} approvals list",
        f"$ {flag} approvals show {approval_id}",
        '"amount_cents": 124900',
        "large-refunds-need-approval",
        "Stopping all worker processes",
        "Started a fresh worker",
        f'$ {flag} --as finn approvals approve {approval_id} --reason "receipt checked"',
        f"approved {approval_id} as finn",
        'approved by finn ("receipt checked")',
        "6 of 6 tickets handled",
    ]
    positions = [out.index(line) for line in steps]
    assert positions == sorted(positions)
    # Every worker running before the approval was stopped; a fresh one made the approved call.
    assert re.search(r"worker \d pid \d+ — started after the stop", out)
    assert "— the approved call, made once by worker" in out
    # The refund tool's effect ledger: one call for A-1003.
    assert ("A-1003", 1) in demo.ledger()
