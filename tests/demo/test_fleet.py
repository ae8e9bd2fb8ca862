"""The support fleet: every ticket end to end on both backends, whole step sequences, the refund
ledger, and `corral demo` as a real process (workers killed and replaced)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from corral import Corral
from corral.demo.fleet import TicketOutcome, handle_ticket
from corral.demo.support_data import TICKETS, ticket
from corral.demo.support_tools import LEDGER_ENV, PACE_ENV, ledger_entries

REPO_ROOT = Path(__file__).resolve().parents[2]

EXPECTED: dict[str, tuple[str, list[str], int | None]] = {
    # ticket → (route, specialists consulted, refund in cents or None)
    "T-1001": ("order_status", ["order_lookup"], None),
    "T-1002": ("refund", ["order_lookup", "policy_check", "refunds"], 3850),
    "T-1003": ("refund", ["order_lookup", "policy_check", "refunds"], 124900),
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


async def handle(corral: Corral, ticket_id: str) -> tuple[str, TicketOutcome]:
    started = await corral.start(handle_ticket, ticket(ticket_id))
    await corral.run_until_idle()
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


@pytest.mark.parametrize("ticket_id", sorted(EXPECTED))
async def test_each_ticket_is_routed_resolved_and_answered(corral: Corral, ticket_id: str) -> None:
    _, outcome = await handle(corral, ticket_id)
    route, specialists, refund = EXPECTED[ticket_id]
    assert (outcome.route, outcome.specialists) == (route, specialists)
    assert (outcome.refund.amount_cents if outcome.refund else None) == refund
    assert outcome.reply.approved
    assert outcome.reply.subject.endswith(f"[{ticket_id}]")
    assert "scripted model — deterministic, no API key" in outcome.reply.body
    assert outcome.model == "scripted model — deterministic, no API key"
    # The large refund is the one that will stop at an approval gate (governance pending).
    assert bool(outcome.approval) == (ticket_id == "T-1003")


async def test_a_damaged_item_goes_through_the_supervisor_step_by_step(corral: Corral) -> None:
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
    corral: Corral,
) -> None:
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


async def test_an_order_question_goes_straight_to_the_order_desk(corral: Corral) -> None:
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


async def test_the_ledger_holds_one_refund_per_refunded_ticket(
    corral: Corral, ledger: Path
) -> None:
    handles = [await corral.start(handle_ticket, t) for t in TICKETS]
    await corral.run_until_idle()
    for started in handles:
        assert (await corral.get_run(started.run_id)).status == "succeeded"
    entries = ledger_entries(ledger)
    assert sorted((e.order_id, e.amount_cents) for e in entries) == [
        ("A-1002", 3850),
        ("A-1003", 124900),
        ("A-1005", 999),
    ]
    assert [e.requests for e in entries] == [1, 1, 1]  # nothing crashed: one request each


def test_corral_demo_runs_the_fleet_through_a_killed_worker(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    env: dict[str, Any] = {
        k: v for k, v in os.environ.items() if not k.startswith("CORRAL_") and k != "PYTHONPATH"
    }
    env.update({"PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", "CORRAL_ALLOW_NETWORK_MODELS": "0"})
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", "--database-url", url, "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "scripted model — deterministic, no API key" in out
    assert "killed with SIGKILL" in out
    assert "as a replacement" in out
    assert "6 of 6 tickets handled" in out
    assert "3 refund(s) applied for 3 refunded ticket(s)" in out
    assert f"corral --database-url '{url}' runs show " in out
    for t in TICKETS:
        assert f"{t.ticket_id} {t.subject} — route {EXPECTED[t.ticket_id][0]};" in out
    # The ledger beside the database: every refund once, whatever was requested twice.
    with sqlite3.connect(tmp_path / "demo-refunds.db") as conn:
        orders = sorted(row[0] for row in conn.execute("SELECT order_id FROM refunds"))
    conn.close()
    assert orders == ["A-1002", "A-1003", "A-1005"]
