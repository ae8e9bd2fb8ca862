"""Cost attribution: nested multi-agent runs counted once, by agent, workflow, tenant, user, model.

The journals are made by running real agents on the `corral` fixture (SQLite and PostgreSQL);
their model reports a real, priced model string and a known usage per call, so the report can be
checked against an independent sum over the journal (`StepView.cost_usd` of every model step).
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from psycopg import sql
from typer.testing import CliRunner

from corral import Corral
from corral.agents import Agent
from corral.cli import start
from corral.cli.costs import register
from corral.cli.main import root
from corral.models import Call, ModelRequest, ModelResponse, ScriptedModel, reply
from corral.models.messages import Usage
from corral.models.prices import cost_usd
from corral.observe import step_view
from corral.observe.costs import COST_DIMENSIONS, CostRow, cost_report, run_cost, total_of
from corral.store import NewRun, RunRecord, StepWrite, Store, open_store
from corral.store.migrations import SCHEMA_TABLE, load_migrations
from corral.store.postgresql import parse_postgres_url
from corral.store.scripts import Script, Statement
from corral.store.sqlite import parse_sqlite_url
from corral.testing import FakeClock
from corral.tools import tool

REPO_ROOT = Path(__file__).resolve().parents[2]
MINI = "openai:gpt-4o-mini"
TIERED = "anthropic:claude-sonnet-4-5"
"""Priced per million tokens at one rate up to 200k input tokens and another above."""
BY_TIME_OF_DAY = "deepseek:deepseek-chat"
"""Priced at one rate off-peak and another in the day (UTC)."""

UsageOf = Callable[[ModelRequest], tuple[int, int]]


class PricedModel(ScriptedModel):
    """A scripted model that answers as `model` (a model genai-prices knows) with a known usage."""

    def __init__(
        self,
        script: Sequence[Any] | Mapping[str, Sequence[Any]] = (),
        *,
        model: str = MINI,
        usage: UsageOf,
        rules: Any = None,
    ) -> None:
        super().__init__(script, rules=rules)
        self.answering = model
        self._usage = usage

    async def complete(self, request: ModelRequest) -> ModelResponse:
        response = await super().complete(request)
        input_tokens, output_tokens = self._usage(request)
        usage = Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        return response.model_copy(update={"model": self.answering, "usage": usage})


@tool
def noop() -> str:
    """Do nothing."""
    return "ok"


def turn(request: ModelRequest) -> int:
    """How many answers this agent has given in the conversation so far."""
    return sum(1 for m in request.messages if m.role == "assistant" and m.author == request.agent)


BASE_USAGE = {"A": (1200, 300), "B": (2500, 410), "C": (700, 90)}


def known_usage(request: ModelRequest) -> tuple[int, int]:
    """Each agent's calls have their own token counts, growing with each turn."""
    input_tokens, output_tokens = BASE_USAGE[request.agent or ""]
    return input_tokens + 100 * turn(request), output_tokens + 7 * turn(request)


def delegator(name: str, delegate: Agent[Any]) -> Agent[Any]:
    """An agent that asks `delegate` once, then answers."""

    def rules(request: ModelRequest) -> Any:
        if not any(m.role == "tool" for m in request.messages):
            return reply("", Call(f"ask_{delegate.name}", {"task": f"help {name}"}))
        return f"{name} done"

    return Agent(name, model=PricedModel(rules=rules, usage=known_usage), delegates=[delegate])


def hierarchy() -> Agent[Any]:
    """A delegates to B, B delegates to C: five model calls in three runs."""
    c = Agent("C", model=PricedModel(["C done"], usage=known_usage))
    return delegator("A", delegator("B", c))


async def tree_of(store: Store, run_id: str) -> list[RunRecord]:
    """The run and all its descendants, read from the runs table."""
    root = await store.get_run(run_id)
    assert root is not None
    found, pending = [root], [root]
    while pending:
        children = await store.list_runs(parent_run_id=pending.pop().run_id, limit=1000)
        found += children
        pending += children
    return found


async def journal_costs(store: Store, runs: Sequence[RunRecord]) -> list[tuple[str, float, int]]:
    """(agent, cost, tokens) of every model call of `runs`, priced one by one from the journal."""
    calls = []
    for run in runs:
        for record in await store.load_journal(run.run_id):
            step = step_view(record)
            if step.category == "model" and step.status == "succeeded":
                assert step.cost_usd is not None
                assert step.usage is not None
                assert step.agent
                calls.append((step.agent, step.cost_usd, step.usage.total_tokens))
    return calls


async def test_a_three_level_hierarchy_costs_the_sum_of_its_model_calls(corral: Corral) -> None:
    handle = await corral.start(hierarchy(), "plan the trip", started_by="ada")
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "A done"

    runs = await tree_of(corral.store, handle.run_id)
    assert sorted(r.workflow for r in runs) == ["agent:A", "agent:B", "agent:C"]
    assert {r.started_by for r in runs} == {"ada"}  # children carry who started the root
    calls = await journal_costs(corral.store, runs)
    assert sorted(agent for agent, _, _ in calls) == ["A", "A", "B", "B", "C"]
    journal_total = sum(cost for _, cost, _ in calls)
    assert journal_total > 0
    # Token counts independent of the journal: what the model was scripted to report.
    tokens = (1200 + 300) + (1300 + 307) + (2500 + 410) + (2600 + 417) + (700 + 90)
    assert sum(t for _, _, t in calls) == tokens

    cost = await run_cost(corral.store, handle.run_id)
    assert cost is not None
    assert cost.total.cost_usd == pytest.approx(journal_total, rel=1e-12)
    assert (cost.total.model_calls, cost.total.total_tokens, cost.total.runs) == (5, tokens, 3)
    assert cost.total.unpriced_calls == 0
    assert cost.own.key == handle.run_id
    assert cost.own.model_calls == 2
    assert [row.key for row in cost.by_run] == [r.run_id for r in sorted(runs, key=_depth(runs))]
    assert [row.model_calls for row in cost.by_run] == [2, 2, 1]
    assert sum(row.cost_usd for row in cost.by_run) == pytest.approx(journal_total, rel=1e-12)
    assert {row.key: row.model_calls for row in cost.by_agent} == {"A": 2, "B": 2, "C": 1}
    assert [(row.key, row.model_calls) for row in cost.by_model] == [(MINI, 5)]

    # A delegate's run totals its own subtree only.
    b_run = next(r for r in runs if r.workflow == "agent:B")
    b_cost = await run_cost(corral.store, b_run.run_id)
    assert b_cost is not None
    b_calls = [c for a, c, _ in calls if a in ("B", "C")]
    assert (b_cost.total.model_calls, b_cost.total.runs) == (3, 2)
    assert b_cost.total.cost_usd == pytest.approx(sum(b_calls), rel=1e-12)

    by_agent = await cost_report(corral.store, by="agent")
    assert {row.key: row.model_calls for row in by_agent} == {"A": 2, "B": 2, "C": 1}
    for row in by_agent:
        expected = sum(c for a, c, _ in calls if a == row.key)
        assert row.cost_usd == pytest.approx(expected, rel=1e-12)
        assert row.runs == 1
    # Each call once: the agents' rows add up to the root's total, not more.
    assert total_of(by_agent).cost_usd == pytest.approx(journal_total, rel=1e-12)
    assert total_of(by_agent).model_calls == 5

    # Under the run that was started: one row holding everything, one root run.
    for by, key in (("workflow", "agent:A"), ("user", "ada"), ("tenant", "default")):
        (row,) = await cost_report(corral.store, by=by)  # type: ignore[arg-type]
        assert (row.key, row.runs, row.model_calls, row.total_tokens) == (key, 1, 5, tokens)
        assert row.cost_usd == pytest.approx(journal_total, rel=1e-12)
    (row,) = await cost_report(corral.store, by="model")
    assert (row.key, row.runs, row.model_calls) == (MINI, 3, 5)
    assert row.cost_usd == pytest.approx(journal_total, rel=1e-12)


def _depth(runs: Sequence[RunRecord]) -> Callable[[RunRecord], int]:
    parents = {r.run_id: r.parent_run_id for r in runs}

    def depth(run: RunRecord) -> int:
        level, parent = 0, run.parent_run_id
        while parent is not None:
            level, parent = level + 1, parents[parent]
        return level

    return depth


async def test_a_delegate_started_on_its_own_counts_under_its_own_workflow(
    corral: Corral,
) -> None:
    a = hierarchy()
    (b,) = a.delegates
    nested = await corral.start(a, "plan", started_by="ada")
    alone = await corral.start(b, "help", started_by="sam")
    await corral.run_until_idle()

    everything = await tree_of(corral.store, nested.run_id) + await tree_of(
        corral.store, alone.run_id
    )
    calls = await journal_costs(corral.store, everything)
    total = sum(c for _, c, _ in calls)
    by_workflow = {r.key: r for r in await cost_report(corral.store, by="workflow")}
    assert set(by_workflow) == {"agent:A", "agent:B"}
    assert by_workflow["agent:A"].model_calls == 5  # B's and C's calls under A's run
    assert by_workflow["agent:B"].model_calls == 3  # B's own run and its C
    assert (by_workflow["agent:A"].runs, by_workflow["agent:B"].runs) == (1, 1)
    by_agent = {r.key: r for r in await cost_report(corral.store, by="agent")}
    assert {k: r.model_calls for k, r in by_agent.items()} == {"A": 2, "B": 4, "C": 2}
    assert (by_agent["B"].runs, by_agent["C"].runs) == (2, 2)
    by_user = {r.key: r.model_calls for r in await cost_report(corral.store, by="user")}
    assert by_user == {"ada": 5, "sam": 3}
    for by in COST_DIMENSIONS:
        rows = await cost_report(corral.store, by=by)
        assert total_of(rows).cost_usd == pytest.approx(total, rel=1e-12), by
        assert total_of(rows).model_calls == 8, by


async def test_a_tiered_price_is_applied_per_call_not_to_the_sum(corral: Corral) -> None:
    # Two calls under 200k input tokens, one above: summed, they would all be above.
    sizes = [(150_000, 1_000), (120_000, 2_000), (250_000, 3_000)]
    script = [reply("", Call("noop", {}))] * 2 + ["done"]
    model = PricedModel(script, model=TIERED, usage=lambda request: sizes[turn(request)])
    agent = Agent("reader", model=model, tools=[noop])
    handle = await corral.start(agent, "read it all")
    await corral.run_until_idle()
    await handle.wait_for_result()

    each = [cost_usd(TIERED, Usage(input_tokens=i, output_tokens=o)) for i, o in sizes]
    assert None not in each
    per_call = sum(c for c in each if c is not None)
    summed = cost_usd(TIERED, Usage(input_tokens=520_000, output_tokens=6_000))
    assert summed is not None
    assert summed != pytest.approx(per_call)
    (row,) = await cost_report(corral.store, by="model")
    assert (row.key, row.model_calls, row.input_tokens) == (TIERED, 3, 520_000)
    assert row.cost_usd == pytest.approx(per_call, rel=1e-12)


async def test_a_price_by_time_of_day_is_applied_per_call(corral: Corral, clock: FakeClock) -> None:
    # The clock starts at 22:13 UTC (off-peak for this model); 12 hours later is peak time.
    agent = Agent(
        "night", model=PricedModel(["ok"], model=BY_TIME_OF_DAY, usage=lambda r: (9000, 900))
    )
    first = await corral.start(agent, "one")
    await corral.run_until_idle()
    clock.advance(12 * 3600)
    second = await corral.start(agent, "two")
    await corral.run_until_idle()

    calls = await journal_costs(
        corral.store,
        await tree_of(corral.store, first.run_id) + await tree_of(corral.store, second.run_id),
    )
    assert calls[0][1] != pytest.approx(calls[1][1])  # two prices, so the test can tell
    (row,) = await cost_report(corral.store, by="agent")
    assert row.model_calls == 2
    assert row.cost_usd == pytest.approx(calls[0][1] + calls[1][1], rel=1e-12)


async def test_unpriced_models_are_counted_but_not_priced(corral: Corral) -> None:
    mystery = Agent(
        "mystery", model=PricedModel(["?"], model="acme:mystery-9", usage=lambda r: (40, 2))
    )
    scripted = Agent("scripted", model=ScriptedModel(["free"]))
    await corral.start(mystery, "x")
    await corral.start(scripted, "y")
    await corral.run_until_idle()

    rows = {r.key: r for r in await cost_report(corral.store, by="model")}
    assert set(rows) == {"acme:mystery-9", "scripted:script"}
    unknown = rows["acme:mystery-9"]
    assert (unknown.model_calls, unknown.unpriced_calls, unknown.total_tokens) == (1, 1, 42)
    assert unknown.cost_usd == 0.0
    free = rows["scripted:script"]
    assert (free.model_calls, free.unpriced_calls, free.cost_usd) == (1, 0, 0.0)


async def test_since_until_and_tenant_select_the_calls(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    agent = Agent("solo", model=PricedModel(["ok"], usage=lambda r: (1000, 100)))
    await corral.start(agent, "early")
    await corral.run_until_idle()
    middle = clock.now() + 1
    clock.advance(3600)
    # Started in another tenant; executed by the fixture's worker (workers serve every tenant).
    await Corral(store=store, clock=clock, tenant="acme").start(agent, "late")
    await corral.run_until_idle()

    assert [r.model_calls for r in await cost_report(store, by="agent")] == [2]
    assert [r.model_calls for r in await cost_report(store, by="agent", since=middle)] == [1]
    assert [r.model_calls for r in await cost_report(store, by="agent", until=middle)] == [1]
    assert await cost_report(store, by="agent", since=clock.now() + 1) == []
    tenants = {r.key: r.model_calls for r in await cost_report(store, by="tenant")}
    assert tenants == {"default": 1, "acme": 1}
    (only,) = await cost_report(store, by="workflow", tenant="acme")
    assert (only.key, only.model_calls) == ("agent:solo", 1)
    assert await cost_report(store, by="model", tenant="nobody") == []
    assert await run_cost(store, "no-such-run") is None


async def test_a_run_without_model_calls_costs_nothing(corral: Corral, store: Store) -> None:
    @corral.workflow
    async def quiet(ctx: Any, n: int) -> int:
        return n

    handle = await corral.start(quiet, 3, started_by="ada")
    await corral.run_until_idle()
    cost = await run_cost(store, handle.run_id)
    assert cost is not None
    assert cost.total == CostRow(handle.run_id, 1, 0, 0, 0, 0.0, 0)
    assert (cost.by_agent, cost.by_model) == ([], [])
    assert await cost_report(store, by="user") == []


# -- the migration: runs and steps journaled before it are attributed too ----------------------


async def test_migration_0005_attributes_runs_journaled_before_it(db_url: str) -> None:
    create_at_version_4(db_url)
    store = open_store(db_url)
    assert next(m.version for m in await store.migrate()) == 5
    await store.open()
    try:
        (row,) = await cost_report(store, by="workflow")
        assert (row.key, row.runs, row.model_calls, row.input_tokens) == ("agent:top", 1, 3, 600)
        expected = 3 * (cost_usd(MINI, Usage(input_tokens=200, output_tokens=20)) or 0.0)
        assert row.cost_usd == pytest.approx(expected, rel=1e-12)
        (user,) = await cost_report(store, by="user")
        assert user.key is None  # nobody was recorded starting them
        cost = await run_cost(store, "mid")
        assert cost is not None
        assert (cost.total.runs, cost.total.model_calls) == (2, 2)
        # A child created now, of a parent created before, finds the root too.
        await store.start_child(
            StepWrite(
                run_id="leaf",
                epoch=0,
                seq=9,
                kind="child.start",
                name="agent:more",
                status="succeeded",
                at=5.0,
                result='"newest"',
            ),
            NewRun(
                run_id="newest",
                workflow="agent:more",
                workflow_version="1",
                input="{}",
                created_at=5.0,
                parent_run_id="leaf",
                parent_step_seq=9,
            ),
        )
        roots = await store.read_script(
            lambda d: _rows("SELECT run_id, root_run_id FROM runs ORDER BY run_id")
        )
        assert dict(roots) == {"leaf": "top", "mid": "top", "newest": "top", "top": "top"}
    finally:
        await store.close()


def _rows(statement: str) -> Script[list[tuple[Any, ...]]]:
    result = yield Statement(statement)
    return result.rows


def create_at_version_4(url: str) -> None:
    """A database left by the Corral before migration 5, holding a tree of three runs (top → mid
    → leaf), each with one model call of 200 + 20 tokens."""
    migrations = load_migrations("sqlite" if url.startswith("sqlite:") else "postgresql")[:4]
    result = json.dumps(
        {
            "message": {"role": "assistant", "content": "ok", "tool_calls": []},
            "usage": {"input_tokens": 200, "output_tokens": 20, "requests": 1},
            "model": MINI,
            "finish_reason": "stop",
        }
    )
    runs = [
        ("top", "agent:top", None, None),
        ("mid", "agent:mid", "top", 1),
        ("leaf", "agent:leaf", "mid", 1),
    ]
    statements: list[tuple[str, tuple[Any, ...]]] = [(SCHEMA_TABLE, ())]
    for migration in migrations:
        statements += [(s, ()) for s in migration.statements()]
        statements.append(
            (
                "INSERT INTO corral_schema (version, name, applied_at) VALUES (?, ?, 0)",
                (migration.version, migration.name),
            )
        )
    for run_id, workflow, parent, parent_seq in runs:
        statements.append(
            (
                "INSERT INTO runs (run_id, tenant, workflow, workflow_version, status, input,"
                " parent_run_id, parent_step_seq, created_at, updated_at)"
                " VALUES (?, 'default', ?, '1', 'running', '{}', ?, ?, 1.0, 1.0)",
                (run_id, workflow, parent, parent_seq),
            )
        )
        statements.append(
            (
                "INSERT INTO steps (run_id, seq, kind, name, status, result, started_at,"
                " finished_at) VALUES (?, 2, 'step', ?, 'succeeded', ?, 2.0, 3.0)",
                (run_id, f"model:{workflow[6:]}", result),
            )
        )
    if url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(url)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement, params in statements:
                conn.execute(statement, params)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo) as pg, pg.transaction():
        pg.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        pg.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for statement, params in statements:
            pg.execute(statement.replace("?", "%s").encode(), params or None)


# -- the CLI -------------------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    """`corral` with only what these tests use: the root options, `run`, `costs`, `runs cost`."""
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(root)
    runs_app = typer.Typer()
    app.add_typer(runs_app, name="runs")
    start.register(app)
    register(app, runs_app)
    return app


async def invoke(db_url: str, *args: str, principal: str = "ada") -> tuple[int, str, str]:
    """Run the CLI in a thread (it runs its own event loop) against the test's database."""
    env = {
        "CORRAL_DATABASE_URL": db_url,
        "CORRAL_PRINCIPAL": principal,
        "CORRAL_APP": "tests.cli.sample_app",
        "COLUMNS": "200",
    }
    result = await asyncio.to_thread(CliRunner().invoke, cli_app(), list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


async def test_corral_run_records_who_started_the_run_and_its_children(
    db_url: str, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    code, out, _ = await invoke(db_url, "run", "parent", "--input", '"Ada"', "--wait")
    assert code == 0, out
    run_id = out.splitlines()[0]
    runs = await tree_of(store, run_id)
    assert len(runs) == 2
    assert [r.started_by for r in runs] == ["ada", "ada"]


async def test_corral_costs_prints_a_table_with_a_total_and_json(
    corral: Corral, db_url: str
) -> None:
    handle = await corral.start(hierarchy(), "plan", started_by="ada")
    await corral.run_until_idle()
    cost = await run_cost(corral.store, handle.run_id)
    assert cost is not None

    code, out, _ = await invoke(db_url, "costs", "--by", "agent", "--since", "1000w")
    assert code == 0
    lines = [line.split() for line in out.splitlines() if line.strip()]
    assert [line[0] for line in lines[1:-1] if line[0] in ("A", "B", "C")] == ["B", "A", "C"]
    assert lines[-1][0] == "total"
    assert lines[-1][2] == "5"  # model calls; runs do not add up across agents ("—")

    code, out, _ = await invoke(db_url, "costs", "--by", "user", "--json")
    assert code == 0
    report = json.loads(out)
    assert [(r["key"], r["runs"], r["model_calls"]) for r in report["rows"]] == [("ada", 1, 5)]
    assert report["total"]["cost_usd"] == pytest.approx(cost.total.cost_usd, rel=1e-12)
    assert report["total"]["runs"] == 1

    code, out, _ = await invoke(db_url, "runs", "cost", handle.run_id, "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["total"]["model_calls"] == 5
    assert [r["model_calls"] for r in shown["by_run"]] == [2, 2, 1]
    code, out, _ = await invoke(db_url, "runs", "cost", handle.run_id)
    assert code == 0
    assert out.startswith(f"run {handle.run_id}: $")
    assert "5 model calls" in out

    code, _, err = await invoke(db_url, "runs", "cost", "no-such-run")
    assert code == 2
    assert "no run 'no-such-run'" in err
    code, _, err = await invoke(db_url, "costs", "--since", "soon")
    assert code == 2
    assert "--since 'soon'" in err
