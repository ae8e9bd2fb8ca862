"""Properties of scopes and approval gates (hypothesis).

1. A child never exceeds its parent: whatever a chain extended by a child's grants allows, the
   parent's chain allows too.
2. Removing scopes never allows more: fewer grants anywhere in a chain allow a subset.
3. Default deny: a chain with no grants allows nothing.
4. A `require_approval` call never executes without a matching approval, under any interleaving
   of workers, human approvals, edits, rejections, races and deadlines: on SQLite and PostgreSQL,
   each example on a fresh database.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from corral import Corral
from corral.agents import Agent
from corral.errors import AlreadyDecided, ApprovalNotFound, CorralError
from corral.governance import approvals, identity
from corral.governance.identity import ScopeChain
from corral.governance.policy_store import apply_policy
from corral.models import Call, ModelRequest, ScriptedModel, reply
from corral.models.scripted import Turn
from corral.store.scripts import Dialect, Script
from corral.testing import FakeClock
from corral.tools import tool

POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)


def drop_schema(schema: str) -> None:
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


RESOURCES = ["payments", "orders", "email"]
ACTIONS = ["read", "refund", "send", "delete"]
scope = st.builds(lambda r, a: f"{r}:{a}", st.sampled_from(RESOURCES), st.sampled_from(ACTIONS))
grant = st.one_of(scope, st.sampled_from(RESOURCES).map(lambda r: f"{r}:*"), st.just("*"))
grants = st.lists(grant, max_size=5)
chains = st.lists(grants, min_size=1, max_size=4).map(
    lambda links: ScopeChain(links=tuple(map(tuple, links)))
)
"""An agent's chain: its own grants and those of every agent above it (at least one link)."""


@given(chains, grants, scope)
def test_a_child_never_exceeds_its_parent(
    parent: ScopeChain, child: list[str], wanted: str
) -> None:
    if parent.extend(child).allows(wanted):
        assert parent.allows(wanted)


@given(chains, st.data(), scope)
def test_removing_scopes_never_allows_more(chain: ScopeChain, data: Any, wanted: str) -> None:
    fewer = ScopeChain(
        links=tuple(
            tuple(g for g in link if data.draw(st.booleans(), label=f"keep {g}"))
            for link in chain.links
        )
    )
    if fewer.allows(wanted):
        assert chain.allows(wanted)


@given(scope)
def test_no_grants_allow_nothing(wanted: str) -> None:
    assert not ScopeChain().allows(wanted)
    assert not ScopeChain().extend([]).allows(wanted)


# -- approval gates under any interleaving ---------------------------------------------------

POLICY = """
name: gate
rules:
  - name: big-refunds
    match: {{tools: [issue_refund]}}
    when: args.amount_cents > 100
    effect: require_approval
    approval: {{approvers: [finance], deadline: 1h, on_deadline: {on_deadline},
                escalate_to: [leads]}}
"""

EVENTS = st.sampled_from(["work", "approve", "edit", "reject", "deadline", "race"])


async def interleave(url: str, on_deadline: str, events: list[str]) -> None:
    executed: list[dict[str, Any]] = []

    @tool(scopes=["payments:refund"])
    def issue_refund(order_id: str, amount_cents: int) -> str:
        """Refund."""
        executed.append({"order_id": order_id, "amount_cents": amount_cents})
        return "refunded"

    def rules(request: ModelRequest) -> Turn:
        if not any(m.role == "tool" for m in request.messages):
            return reply("", Call("issue_refund", {"order_id": "A-1", "amount_cents": 5000}))
        return reply("done")

    agent = Agent(
        f"refunds_{uuid.uuid4().hex[:6]}",
        model=ScriptedModel(rules=rules),
        tools=[issue_refund],
        scopes=["payments:refund"],
    )
    clock = FakeClock()
    async with Corral(url, clock=clock, heartbeat_interval=None) as corral:
        await apply_policy(
            corral.store,
            corral.tenant,
            POLICY.format(on_deadline=on_deadline),
            source="gate.yaml",
            actor="human:t",
            now=clock.now(),
        )
        for name, group in (("fin", "finance"), ("lead", "leads")):

            def add(d: Dialect, name: str = name, group: str = group) -> Script[Any]:
                principal = identity.Principal(
                    tenant=corral.tenant, name=name, roles=("approver",), groups=(group,)
                )
                return (yield from identity.add_principal(principal, actor="t", now=0.0, dialect=d))

            await corral.store.run_script(add)
        handle = await corral.start(agent, "refund A-1")

        async def decide(approve: bool, edit: bool = False) -> None:
            found = await corral.store.read_script(
                lambda d: approvals.list_approvals(corral.tenant, status="pending")
            )
            for request in found:
                with contextlib.suppress(AlreadyDecided, ApprovalNotFound, CorralError):
                    await approvals.decide(
                        corral,
                        request.approval_id,
                        approve=approve,
                        principal="lead" if request.escalations else "fin",
                        reason="r",
                        edited_arguments={"order_id": "A-1", "amount_cents": 4000}
                        if edit
                        else None,
                    )

        for event in [*events, "work", "deadline", "work", "deadline", "work"]:
            if event == "work":
                await corral.run_until_idle()
            elif event == "approve":
                await decide(True)
            elif event == "edit":
                await decide(True, edit=True)
            elif event == "reject":
                await decide(False)
            elif event == "deadline":
                clock.advance(3601)
            elif event == "race":
                await asyncio.gather(decide(True), decide(False), corral.run_until_idle())

        rows = await corral.store.read_script(lambda d: approvals.list_approvals(corral.tenant))
        run = await corral.get_run(handle.run_id)
    assert len(executed) <= 1, executed
    if executed:
        (row,) = rows
        decision = row.decision()
        assert decision is not None, (events, row)
        assert decision.approved, (events, row)
        assert approvals.arguments_hash(executed[0]) == decision.arguments_hash
    else:
        assert all(r.status != "approved" for r in rows) or run.status != "succeeded"


PROPERTY = settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@PROPERTY
@given(st.sampled_from(["reject", "approve", "escalate"]), st.lists(EVENTS, max_size=6))
def test_no_approval_no_call_on_sqlite(tmp_path: Path, on_deadline: str, events: list[str]) -> None:
    url = f"sqlite:///{tmp_path / uuid.uuid4().hex}.db"
    asyncio.run(interleave(url, on_deadline, events))


@PROPERTY
@given(st.sampled_from(["reject", "approve", "escalate"]), st.lists(EVENTS, max_size=6))
def test_no_approval_no_call_on_postgresql(on_deadline: str, events: list[str]) -> None:
    schema = f"prop_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(interleave(f"{POSTGRES_URL}?schema={schema}", on_deadline, events))
    finally:
        drop_schema(schema)
