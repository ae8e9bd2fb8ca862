"""Traces: a run's span tree from its journal, and `corral runs trace`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral import Corral, RunContext
from corral.agents import Agent, fan_out
from corral.cli.observe_traces import register
from corral.cli.session import Settings
from corral.models import Call, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.models.messages import Usage
from corral.models.model import Model
from corral.observe import load_run_view
from corral.observe.traces import Span, build_trace, load_trace, span_id_for, trace_id_for
from corral.store import open_store
from corral.testing import FakeClock
from corral.tools import tool

PRICED = "openai:gpt-4o-mini"
CALL_COST = 0.00045
"""What one call of 1,000 input and 500 output tokens costs on PRICED."""


class PricedModel(Model):
    """A scripted model that reports a priced model's name and 1,000 input / 500 output tokens
    per call, and takes `seconds` of virtual time per call."""

    def __init__(self, script: ScriptedModel, clock: FakeClock, *, seconds: float = 0.0) -> None:
        self.name = PRICED
        self._script = script
        self._clock = clock
        self._seconds = seconds

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await self._script.complete(request)
        self._clock.advance(self._seconds)
        usage = Usage(input_tokens=1000, output_tokens=500)
        return response.model_copy(update={"model": self.name, "usage": usage})


def echo_worker(name: str, clock: FakeClock) -> Agent[Any]:
    def rules(request: ModelRequest) -> str:
        return f"{name}: {request.messages[-1].content}"

    return Agent(name, model=PricedModel(ScriptedModel(rules=rules), clock))


def make_supervisor(clock: FakeClock) -> Agent[Any]:
    """A supervisor that looks an order up (2s), then asks two workers in parallel, then
    answers: each of its model calls takes 0.5s."""

    @tool
    async def lookup(order_id: str) -> dict[str, str]:
        """Find an order."""
        clock.advance(2.0)
        return {"order_id": order_id, "status": "late"}

    def supervisor_rules(request: ModelRequest) -> Any:
        results = [m.content for m in request.messages if m.role == "tool"]
        if not results:
            return reply("", Call("lookup", {"order_id": "A-1"}))
        if len(results) == 1:
            return reply(
                "",
                Call("ask_billing", {"task": "refund A-1?"}),
                Call("ask_shipping", {"task": "where is A-1?"}),
            )
        return "Summary: " + " / ".join(results)

    return Agent(
        "supervisor",
        model=PricedModel(ScriptedModel(rules=supervisor_rules), clock, seconds=0.5),
        tools=[lookup],
        delegates=[echo_worker("billing", clock), echo_worker("shipping", clock)],
    )


async def supervisor_run(corral: Corral, supervisor: Agent[Any]) -> str:
    """Run `make_supervisor`'s agent to its end; its run id."""
    handle = await corral.start(supervisor, "Customer 42 is unhappy")
    await corral.run_until_idle()
    assert (await handle.get()).status == "succeeded"
    return handle.run_id


def shape(span: Span, depth: int = 0) -> list[tuple[int, str, str]]:
    """The tree as (depth, name, status) in walk order."""
    rows: list[tuple[int, str, str]] = [(depth, span.name, span.status)]
    for child in span.children:
        rows.extend(shape(child, depth + 1))
    return rows


def assert_linked(span: Span) -> None:
    """Every child names its parent's span id, and every span the same trace."""
    for child in span.children:
        assert child.parent_span_id == span.span_id
        assert child.trace_id == span.trace_id
        assert_linked(child)


async def test_a_supervisor_run_is_a_tree_with_workers_under_their_delegations(
    corral: Corral, clock: FakeClock
) -> None:
    run_id = await supervisor_run(corral, make_supervisor(clock))
    root = await load_trace(corral.store, run_id)
    assert root is not None
    chat = f"chat {PRICED}"
    assert shape(root) == [
        (0, "invoke_agent supervisor", "ok"),
        (1, chat, "ok"),
        (1, "execute_tool lookup", "ok"),
        (1, chat, "ok"),
        (1, "execute_tool ask_billing", "ok"),
        (2, "invoke_agent billing", "ok"),
        (3, chat, "ok"),
        (1, "child.result agent:billing", "ok"),
        (1, "execute_tool ask_shipping", "ok"),
        (2, "invoke_agent shipping", "ok"),
        (3, chat, "ok"),
        (1, "child.result agent:shipping", "ok"),
        (1, chat, "ok"),
    ]
    assert root.trace_id == trace_id_for(run_id)
    assert root.parent_span_id is None
    assert_linked(root)
    spans = list(root.walk())
    assert len({s.span_id for s in spans}) == len(spans)

    # The delegation carries the model's call; the worker's run hangs under it.
    view = await load_run_view(corral.store, run_id)
    assert view is not None
    asked = view.steps[2].message
    assert asked is not None
    ask_billing = root.children[3]
    assert ask_billing.call_id == asked["tool_calls"][0]["call_id"]
    assert (ask_billing.tool, ask_billing.agent, ask_billing.operation) == (
        "ask_billing",
        "supervisor",
        "execute_tool",
    )
    billing = ask_billing.children[0]
    assert billing.run_id == ask_billing.child_run_id
    assert (billing.kind, billing.agent, billing.operation) == ("run", "billing", "invoke_agent")
    assert billing.children[0].agent == "billing"
    assert root.children[2].agent == "supervisor"  # a tool span names the agent that asked

    # Durations come from the journal's timestamps (virtual time here).
    assert root.duration == pytest.approx(0.5 + 2.0 + 0.5 + 0.5)
    assert root.children[0].duration == pytest.approx(0.5)
    assert root.children[1].duration == pytest.approx(2.0)

    # Tokens and cost: each model call once in its own span, rolled up into every ancestor.
    first = root.children[0]
    assert (first.input_tokens, first.output_tokens) == (1000, 500)
    assert first.cost_usd == pytest.approx(CALL_COST)
    assert (first.request_model, first.response_model) == (PRICED, PRICED)
    assert ask_billing.totals.model_calls == 1
    assert ask_billing.totals.cost_usd == pytest.approx(CALL_COST)
    assert root.totals.model_calls == 5
    assert (root.totals.input_tokens, root.totals.output_tokens) == (5000, 2500)
    assert root.totals.cost_usd == pytest.approx(5 * CALL_COST)
    chats = [s for s in spans if s.operation == "chat"]
    assert sum(s.cost_usd or 0.0 for s in chats) == pytest.approx(root.totals.cost_usd)
    assert root.totals.unpriced_calls == 0

    # Ids come from the journal: the same every time, and a child traced alone keeps its place.
    assert await load_trace(corral.store, run_id) == root
    assert root.children[0].span_id == span_id_for(run_id, 1)
    assert root.span_id == span_id_for(run_id, None)

    ask_shipping = root.children[5]
    assert ask_shipping.tool == "ask_shipping"
    assert ask_shipping.child_run_id is not None
    alone = await load_trace(corral.store, ask_shipping.child_run_id)
    assert alone is not None
    assert alone.trace_id == root.trace_id
    assert alone.parent_span_id == ask_shipping.span_id
    assert alone == ask_shipping.children[0]


async def test_a_failed_tool_call_is_an_error_span_in_a_run_that_went_on(corral: Corral) -> None:
    @tool
    def refund(order_id: str) -> str:
        """Refund an order."""
        raise RuntimeError(f"payment gateway refused {order_id}")

    model = ScriptedModel([reply("", Call("refund", {"order_id": "A-1"})), "Could not refund."])
    agent = Agent("refunds", model=model, tools=[refund])
    handle = await corral.start(agent, "refund A-1")
    await corral.run_until_idle()
    root = await load_trace(corral.store, handle.run_id)
    assert root is not None
    assert shape(root) == [
        (0, "invoke_agent refunds", "ok"),
        (1, "chat scripted:script", "ok"),
        (1, "execute_tool refund", "error"),
        (1, "chat scripted:script", "ok"),
    ]
    failed = root.children[1]
    assert failed.journal_status == "failed"
    assert failed.error is not None
    assert (failed.error.type, failed.error.message) == (
        "RuntimeError",
        "payment gateway refused A-1",
    )
    assert failed.call_id == "call_refunds_0_0"
    assert root.totals.cost_usd == 0.0  # the scripted model is free, not unpriced
    assert root.totals.unpriced_calls == 0


async def test_fan_out_children_nest_under_their_child_start_steps(
    corral: Corral, clock: FakeClock
) -> None:
    billing, shipping = echo_worker("billing", clock), echo_worker("shipping", clock)

    @corral.workflow
    async def triage(ctx: RunContext, ticket: str) -> dict[str, Any]:
        return await fan_out(
            ctx, {"billing": (billing, f"invoice {ticket}"), "shipping": (shipping, ticket)}
        )

    handle = await corral.start(triage, "T-1")
    await corral.run_until_idle()
    root = await load_trace(corral.store, handle.run_id)
    assert root is not None
    assert [(d, n) for d, n, _ in shape(root)] == [
        (0, "triage"),
        (1, "child.start agent:billing"),
        (2, "invoke_agent billing"),
        (3, f"chat {PRICED}"),
        (1, "child.start agent:shipping"),
        (2, "invoke_agent shipping"),
        (3, f"chat {PRICED}"),
        (1, "child.result agent:billing"),
        (1, "child.result agent:shipping"),
    ]
    assert root.operation is None  # a plain workflow is not an agent
    assert root.totals.model_calls == 2
    assert root.totals.cost_usd == pytest.approx(2 * CALL_COST)


async def test_a_waiting_run_is_in_progress(corral: Corral) -> None:
    @corral.workflow
    async def gated(ctx: RunContext, order: str) -> str:
        decision: str = await ctx.wait_for_signal("decision")
        return decision

    handle = await corral.start(gated, "A-1")
    await corral.run_until_idle()
    view = await load_run_view(corral.store, handle.run_id)
    assert view is not None
    root = build_trace(view)
    assert (root.status, root.journal_status, root.finished_at, root.duration) == (
        "unset",
        "waiting",
        None,
        None,
    )


# -- corral runs trace --------------------------------------------------------------------------


def trace_cli(db_url: str, *args: str) -> Any:
    app = typer.Typer()
    runs_app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Settings(database_url=db_url, app=None, principal="tester")

    app.add_typer(runs_app, name="runs")
    register(app, runs_app)
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_runs_trace_prints_the_tree_with_durations_tokens_and_cost(db_url: str) -> None:
    async def build() -> str:
        store = open_store(db_url)
        clock = FakeClock()
        async with Corral(store=store, clock=clock) as corral:
            return await supervisor_run(corral, make_supervisor(clock))

    run_id = asyncio.run(build())
    shown = trace_cli(db_url, "runs", "trace", run_id)
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith("invoke_agent supervisor  succeeded  3.50s")
    assert "Σ 5 model calls, 7,500 tokens, $0.00225" in lines[0]
    assert any("execute_tool lookup  succeeded  2.00s" in line for line in lines)
    assert any(
        "invoke_agent billing" in line and "Σ 1 model call, 1,500 tokens" in line for line in lines
    )
    assert sum("1,500 tokens (1,000 in / 500 out)  $0.00045" in line for line in lines) == 5
    assert lines[-1] == (
        f"trace {trace_id_for(run_id)}: 13 spans, 3.50s, 5 model calls, 7,500 tokens, $0.00225"
    )

    as_json = trace_cli(db_url, "runs", "trace", run_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert (data["run_id"], data["trace_id"], data["spans"]) == (run_id, trace_id_for(run_id), 13)
    assert data["totals"]["model_calls"] == 5
    assert data["totals"]["cost_usd"] == pytest.approx(5 * CALL_COST)
    billing = data["root"]["children"][3]["children"][0]
    assert (billing["name"], billing["totals"]["input_tokens"]) == ("invoke_agent billing", 1000)

    missing = trace_cli(db_url, "runs", "trace", "no-such-run")
    assert missing.exit_code == 2
    assert "no run 'no-such-run'" in missing.stderr
