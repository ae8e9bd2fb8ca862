"""Full-text search across runs' journals, on SQLite (FTS5) and PostgreSQL (tsvector + GIN).

Journals come from agents really run on scripted models: a refund that the bank declined, an
order that shipped, and a run of another tenant that says the same words as the first.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from corral import Corral, RunContext
from corral.agents import Agent
from corral.cli.main import root
from corral.cli.reading import parse_moment
from corral.cli.search import register
from corral.errors import UsageError
from corral.governance.redaction import Redactor
from corral.governance.retention import redact_run
from corral.models import Call, ScriptedModel, reply
from corral.observe import search
from corral.observe.search import (
    MATCH_END,
    MATCH_START,
    RUNS_FIRST,
    SearchQuery,
    catch_up,
    search_runs,
)
from corral.store.scripts import Dialect, Script, Statement
from corral.testing import FakeClock
from corral.tools import tool

HOUR = 3600.0


@tool
def lookup_order(order_id: str) -> dict[str, str]:
    """Find an order."""
    return {"order_id": order_id, "status": "shipped"}


@tool
def issue_refund(order_id: str, amount: float) -> str:
    """Refund an order."""
    raise ValueError(f"refund of {amount} for {order_id} declined by the card issuer")


def refunds_agent() -> Agent[str]:
    model = ScriptedModel(
        [
            reply("", Call("lookup_order", {"order_id": "A-17"})),
            reply("", Call("issue_refund", {"order_id": "A-17", "amount": 42.5})),
            "I could not refund A-17: the card issuer declined it.",
        ]
    )
    return Agent("refunds", model=model, tools=[lookup_order, issue_refund])


def support_agent() -> Agent[str]:
    model = ScriptedModel(
        [reply("", Call("lookup_order", {"order_id": "B-9"})), "Order B-9 is on its way."]
    )
    return Agent("support", model=model, tools=[lookup_order])


@dataclass
class Fleet:
    refund: str
    shipped: str
    foreign: str
    """A run of tenant `globex` that also mentions a declined refund."""


async def run_fleet(corral: Corral, clock: FakeClock) -> Fleet:
    refund = await corral.start(refunds_agent(), "Please refund order A-17, the parcel was lost")
    await corral.run_until_idle()
    clock.advance(2 * HOUR)
    shipped = await corral.start(support_agent(), "Where is my order B-9?")
    await corral.run_until_idle()
    # Another tenant on the same database; this Corral shares the store, so it is not closed.
    other = Corral(store=corral.store, clock=clock, tenant="globex", heartbeat_interval=None)
    foreign = await other.start(refunds_agent(), "Refund order A-17 again")
    await other.run_until_idle()
    return Fleet(refund.run_id, shipped.run_id, foreign.run_id)


async def found(
    corral: Corral, query: str, *, tenant: str | None = "default", **filters: Any
) -> list[str]:
    hits = await search_runs(corral.store, query, tenant=tenant, **filters)
    return [hit.run_id for hit in hits]


async def test_search_returns_the_runs_whose_journal_has_the_words_and_where(
    corral: Corral, clock: FakeClock
) -> None:
    fleet = await run_fleet(corral, clock)

    assert await found(corral, "refund declined") == [fleet.refund]
    assert await found(corral, "shipped") == [fleet.shipped, fleet.refund]  # newest first
    assert await found(corral, "B-9") == [fleet.shipped]
    assert await found(corral, "refund declined", tenant="globex") == [fleet.foreign]
    assert set(await found(corral, "declined", tenant=None)) == {fleet.refund, fleet.foreign}
    assert await found(corral, "refund declined", tenant="initech") == []
    assert await found(corral, "teleported") == []

    # Each hit names the step and field that matched best.
    (error,) = await search_runs(corral.store, "ValueError issuer", tenant=corral.tenant)
    assert (error.run_id, error.workflow, error.status) == (
        fleet.refund,
        "agent:refunds",
        "succeeded",
    )
    assert (error.seq, error.step_name, error.field) == (4, "tool:issue_refund", "error")
    assert f"{MATCH_START}issuer{MATCH_END}" in error.snippet
    assert error.where == "step 4 tool:issue_refund (error)"

    (argument,) = await search_runs(corral.store, "42.5", tenant=corral.tenant)
    assert argument.field == "arguments"
    assert argument.step_name in ("tool:issue_refund", "model:refunds")

    (asked,) = await search_runs(corral.store, "parcel lost", tenant=corral.tenant)
    assert (asked.seq, asked.field, asked.where) == (None, "input", "run (input)")

    (answer,) = await search_runs(corral.store, '"on its way"', tenant=corral.tenant)
    assert answer.run_id == fleet.shipped
    assert answer.field == "output"


@pytest.mark.parametrize("runs_first", [RUNS_FIRST, 0], ids=["runs-first", "words-first"])
async def test_filters_narrow_the_runs_and_the_query_is_web_search(
    corral: Corral, clock: FakeClock, runs_first: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PostgreSQL matches the documents of few filtered runs directly: both ways are tested.
    monkeypatch.setattr(search, "RUNS_FIRST", runs_first)
    fleet = await run_fleet(corral, clock)
    now = clock.now()

    assert await found(corral, "order", agent="support") == [fleet.shipped]
    assert await found(corral, "order", agent="refunds") == [fleet.refund]
    assert await found(corral, "order", tool="issue_refund") == [fleet.refund]
    assert await found(corral, "order", tool="lookup_order") == [fleet.shipped, fleet.refund]
    assert await found(corral, "order", tool="send_email") == []
    assert await found(corral, "order", status="succeeded") == [fleet.shipped, fleet.refund]
    assert await found(corral, "order", status="failed") == []
    assert await found(corral, "order", since=now - HOUR) == [fleet.shipped]
    assert await found(corral, "order", until=now - HOUR) == [fleet.refund]
    assert await found(corral, "order", since=now + HOUR) == []
    assert await found(corral, "order", agent="refunds", since=now - HOUR) == []
    assert await found(corral, "order", limit=1) == [fleet.shipped]

    # The query language is the web-search one.
    assert await found(corral, "refunded") == [fleet.refund]  # stemmed: refund
    assert await found(corral, "declined OR way") == [fleet.shipped, fleet.refund]
    assert await found(corral, "order -declined") == [fleet.shipped]
    assert await found(corral, '"parcel was lost"') == [fleet.refund]
    assert await found(corral, '"lost was parcel"') == []
    with pytest.raises(UsageError, match="no word that must appear"):
        await found(corral, "-declined")

    # An agent run inside another workflow counts as a run of that agent.
    @corral.workflow
    async def front_desk(ctx: RunContext, question: str) -> str:
        answer = await support_agent().run(ctx, question)
        return str(answer.output)

    desk = await corral.start(front_desk, "Is my order on its way?")
    await corral.run_until_idle()
    assert await found(corral, "order", agent="support") == [desk.run_id, fleet.shipped]


async def test_the_index_follows_redaction(corral: Corral) -> None:
    handle = await corral.start(support_agent(), "Mail ada@example.com about order B-9")
    await corral.run_until_idle()
    assert await found(corral, "ada@example.com") == [handle.run_id]

    def redact(dialect: Dialect) -> Script[int]:
        return (
            yield from redact_run(
                handle.run_id, Redactor.from_settings({}), actor="test", now=1.0, dialect=dialect
            )
        )

    assert await corral.store.run_script(redact) >= 1
    assert await found(corral, "ada@example.com") == []
    assert await found(corral, "redacted email") == [handle.run_id]


async def test_a_deleted_run_leaves_the_index(corral: Corral) -> None:
    agent = support_agent()
    kept = await corral.start(agent, "Where is my order B-9?")
    deleted = await corral.start(agent, "Where is my order B-9? Ada asks.")
    await corral.run_until_idle()
    assert await found(corral, "B-9") == [deleted.run_id, kept.run_id]

    def delete(dialect: Dialect) -> Script[None]:
        # What a retention job that deletes whole runs would do.
        yield Statement("DELETE FROM steps WHERE run_id = ?", (deleted.run_id,))
        yield Statement("DELETE FROM runs WHERE run_id = ?", (deleted.run_id,))

    await corral.store.run_script(delete)
    assert await found(corral, "B-9") == [kept.run_id]
    assert await found(corral, "Ada") == []


async def test_catch_up_indexes_each_change_once(corral: Corral) -> None:
    handle = await corral.start(support_agent(), "Where is my order B-9?")
    await corral.run_until_idle()
    # Not yet indexed: a search that does not catch up finds nothing.
    assert await search_runs(corral.store, "B-9", tenant=None, index_first=False) == []
    indexed = await catch_up(corral.store, batch=2)
    assert indexed >= 5  # the run's creation and outcome, and its three steps
    assert await catch_up(corral.store) == 0
    hits = await search_runs(corral.store, "B-9", tenant=None, index_first=False)
    assert [hit.run_id for hit in hits] == [handle.run_id]


def test_the_query_is_parsed_and_quoted_so_nothing_typed_is_syntax() -> None:
    query = SearchQuery.parse('refund "card issuer" OR bank -shipped -"on its way"')
    assert query == SearchQuery((("refund",), ("card issuer", "bank")), ("shipped", "on its way"))
    assert query.fts5() == (
        '{input output arguments error} : (("refund") AND ("card issuer" OR "bank"))'
    )
    assert query.fts5(excluded=True) == (
        '{input output arguments error} : (("shipped" OR "on its way"))'
    )
    assert query.websearch() == '"refund" "card issuer" or "bank"'
    assert query.websearch(excluded=True) == '"shipped" or "on its way"'
    tricky = SearchQuery.parse('tags:tn00 NEAR(a b) x"y OR')
    assert tricky.fts5() == (
        '{input output arguments error} : (("tags:tn00") AND ("NEAR(a") AND ("b)") AND ("x y"))'
    )
    with pytest.raises(UsageError, match="no word that must appear"):
        SearchQuery.parse('  "" -- OR -refund')


def test_times_are_durations_ago_or_iso_dates() -> None:
    assert parse_moment("1d", option="--since", now=100_000.0) == 100_000.0 - 86_400
    assert parse_moment("90s", option="--since", now=1_000.0) == 910.0
    assert parse_moment("1970-01-02", option="--until", now=0.0) == 86_400.0
    assert parse_moment("1970-01-01T01:00:00Z", option="--until", now=0.0) == 3600.0
    with pytest.raises(UsageError, match="--since 'yesterday'"):
        parse_moment("yesterday", option="--since", now=0.0)


# -- the CLI -------------------------------------------------------------------------------------


def cli_app() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False)
    app.callback()(root)
    runs_app = typer.Typer()
    app.add_typer(runs_app, name="runs")
    register(app, runs_app)
    return app


async def invoke(db_url: str, *args: str) -> tuple[int, str, str]:
    """Run the CLI in a thread (it runs its own event loop) against the test's database."""
    env = {"CORRAL_DATABASE_URL": db_url, "COLUMNS": "200", "CORRAL_TENANT": None}
    result = await asyncio.to_thread(CliRunner().invoke, cli_app(), list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


async def test_corral_runs_search(db_url: str, corral: Corral, clock: FakeClock) -> None:
    fleet = await run_fleet(corral, clock)

    code, out, _ = await invoke(db_url, "runs", "search", "ValueError", "--json")
    assert code == 0, out
    (hit,) = json.loads(out)["hits"]
    assert (hit["run_id"], hit["step_name"], hit["field"]) == (
        fleet.refund,
        "tool:issue_refund",
        "error",
    )
    code, out, _ = await invoke(
        db_url, "runs", "search", "refund", "--tenant", "globex", "--agent", "refunds", "--json"
    )
    assert [h["run_id"] for h in json.loads(out)["hits"]] == [fleet.foreign]

    code, out, _ = await invoke(db_url, "runs", "search", "shipped", "--status", "succeeded")
    assert code == 0
    assert fleet.shipped in out
    assert fleet.refund in out
    assert "tool:lookup_order" in out

    code, _, err = await invoke(db_url, "runs", "search", "shipped", "--since", "1d")
    assert code == 0
    assert "no runs of tenant 'default' match 'shipped'" in err  # the fleet ran in 2023 (FakeClock)

    code, _, err = await invoke(db_url, "runs", "search", "shipped", "--since", "soon")
    assert code == 2
    assert "--since 'soon'" in err

    code, out, _ = await invoke(db_url, "runs", "index", "--json")
    assert code == 0
    assert json.loads(out)["indexed"] == 0  # the searches above caught the index up


async def test_indexing_plans_per_execution_and_restores_the_setting(
    corral: Corral, clock: FakeClock, backend: str
) -> None:
    """On PostgreSQL a batch's statements are planned per execution (cached generic plans made
    while the index was small scan it whole), and the writer's shared transaction gets its own
    setting back afterwards; SQLite has no such setting."""
    fleet = await run_fleet(corral, clock)
    if backend == "sqlite":
        assert await corral.store.run_script(lambda d: search.index_changes(500, dialect=d)) > 0
        assert await found(corral, "B-9") == [fleet.shipped]
        return

    def batch_then_setting(dialect: Dialect) -> Script[tuple[int, list[str]]]:
        settings = []
        yield Statement("SET LOCAL plan_cache_mode = force_generic_plan")
        during = yield from search.index_changes(500, dialect=dialect)
        after = yield Statement("SELECT current_setting('plan_cache_mode')")
        settings.append(after.scalar())
        return during, settings

    indexed, settings = await corral.store.run_script(batch_then_setting)
    assert indexed > 0
    assert settings == ["force_generic_plan"]
    assert await found(corral, "B-9") == [fleet.shipped]
