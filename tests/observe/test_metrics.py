"""Metrics: per agent, tool and model, aggregated in SQL; the Prometheus exposition; and
`corral metrics`."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
import typer
from prometheus_client.parser import text_string_to_metric_families
from typer.testing import CliRunner

from corral import Corral
from corral.agents import Agent
from corral.cli.observe_traces import register
from corral.cli.reading import parse_duration as parse_since
from corral.cli.session import Settings
from corral.errors import UsageError
from corral.models import Call, ScriptedModel, reply
from corral.observe.metrics import collect_metrics, render_prometheus
from corral.reliability.breaker_store import save_breakers
from corral.reliability.breakers import BreakerSnapshot
from corral.store import Store, open_store
from corral.testing import FakeClock
from corral.tools import tool

from .test_traces import CALL_COST, PRICED, PricedModel

CHARGES = 10
"""The clerk charges ten orders, one per turn; charge n takes n seconds and fails for 3 and 7."""


async def known_runs(corral: Corral, clock: FakeClock) -> None:
    """A clerk run (11 priced model calls of 0.5s, 10 charges of 1..10s, two failing) and a
    run of an agent whose model has nothing to say (its model step fails, and so its run)."""

    @tool
    async def charge(n: int) -> str:
        """Charge order n."""
        clock.advance(float(n))
        if n in (3, 7):
            raise RuntimeError(f"card declined for order {n}")
        return f"charged {n}"

    turns: list[Any] = [reply("", Call("charge", {"n": n})) for n in range(1, CHARGES + 1)]
    clerk = Agent(
        "clerk",
        model=PricedModel(ScriptedModel([*turns, "done"]), clock, seconds=0.5),
        tools=[charge],
        max_turns=CHARGES + 1,
    )
    mute = Agent("mute", model=ScriptedModel([]))
    await corral.start(clerk, "charge everything")
    await corral.run_until_idle()
    await corral.start(mute, "say something")
    await corral.run_until_idle()


async def publish_breaker(store: Store, now: float) -> None:
    snapshot = BreakerSnapshot(
        key="mcp:payments",
        state="open",
        since=now,
        calls=12,
        failures=9,
        failure_rate=0.75,
        opened_count=2,
    )
    await store.run_script(lambda d: save_breakers("host-a:1:aaaaaa", [snapshot], now=now))


async def test_known_runs_aggregate_to_the_right_numbers_and_exposition(
    corral: Corral, clock: FakeClock
) -> None:
    start = clock.now()
    await known_runs(corral, clock)
    metrics = await collect_metrics(corral.store)

    [charge] = metrics.tools
    assert (charge.tool, charge.calls, charge.failures, charge.error_rate) == (
        "charge",
        10,
        2,
        0.2,
    )
    assert charge.latency is not None
    # Nearest rank of 1..10 s: p50 is the 5th, p95 and p99 the 10th.
    assert (charge.latency.p50, charge.latency.p95, charge.latency.p99) == (5.0, 10.0, 10.0)
    assert (charge.latency.count, charge.latency.total, charge.latency.max) == (10, 55.0, 10.0)

    clerk, mute = metrics.agents
    assert (clerk.agent, clerk.runs, clerk.finished_runs, clerk.failed_runs) == ("clerk", 1, 1, 0)
    assert (clerk.model_calls, clerk.model_failures) == (11, 0)
    assert (clerk.input_tokens, clerk.output_tokens) == (11_000, 5_500)
    assert clerk.cost_usd == pytest.approx(11 * CALL_COST)
    assert clerk.run_latency is not None
    assert clerk.run_latency.p50 == pytest.approx(55 + 11 * 0.5)
    assert (mute.agent, mute.runs, mute.failed_runs, mute.error_rate) == ("mute", 1, 1, 1.0)
    assert (mute.model_calls, mute.model_failures, mute.input_tokens) == (1, 1, 0)

    models = {m.model: m for m in metrics.models}
    priced = models[PRICED]
    assert (priced.calls, priced.failures, priced.input_tokens, priced.output_tokens) == (
        11,
        0,
        11_000,
        5_500,
    )
    assert priced.cost_usd == pytest.approx(11 * CALL_COST)
    assert priced.latency is not None
    assert (priced.latency.p50, priced.latency.p99) == (0.5, 0.5)
    [failed_model] = [m for m in metrics.models if m.model != PRICED]
    assert (failed_model.calls, failed_model.failures, failed_model.error_rate) == (1, 1, 1.0)

    runs = {(r.workflow, r.status): r.runs for r in metrics.runs}
    assert runs == {("agent:clerk", "succeeded"): 1, ("agent:mute", "failed"): 1}

    # Windows and tenants filter; nothing is counted twice.
    assert (await collect_metrics(corral.store, since=clock.now() + 1)).tools == []
    assert (await collect_metrics(corral.store, since=start)).tools == metrics.tools
    other = await collect_metrics(corral.store, tenant="elsewhere")
    assert (other.agents, other.tools, other.models, other.runs) == ([], [], [], [])
    mine = await collect_metrics(corral.store, tenant=corral.tenant)
    assert (mine.agents, mine.tools, mine.models) == (
        metrics.agents,
        metrics.tools,
        metrics.models,
    )

    # The same numbers in the Prometheus exposition, which parses.
    await publish_breaker(corral.store, clock.now())
    text = await render_prometheus(corral.store)
    families = {family.name: family.type for family in text_string_to_metric_families(text)}
    assert families["corral_tool_calls"] == "counter"
    assert families["corral_tool_call_duration_seconds"] == "summary"
    assert families["corral_model_tokens"] == "counter"
    assert families["corral_breaker_state"] == "gauge"
    found = samples(text)

    assert value(found, "corral_tool_calls_total", tool="charge", outcome="succeeded") == 8
    assert value(found, "corral_tool_calls_total", tool="charge", outcome="failed") == 2
    duration = "corral_tool_call_duration_seconds"
    assert value(found, duration, tool="charge", quantile="0.5") == 5.0
    assert value(found, duration, tool="charge", quantile="0.95") == 10.0
    assert value(found, f"{duration}_count", tool="charge") == 10
    assert value(found, f"{duration}_sum", tool="charge") == 55.0

    clerk_model = {"agent": "clerk", "model": PRICED}
    assert value(found, "corral_model_calls_total", **clerk_model, outcome="succeeded") == 11
    assert value(found, "corral_model_tokens_total", **clerk_model, type="input") == 11_000
    assert value(found, "corral_model_tokens_total", **clerk_model, type="output") == 5_500
    assert value(found, "corral_model_cost_usd_total", **clerk_model) == pytest.approx(
        11 * CALL_COST
    )
    assert value(found, "corral_model_call_duration_seconds_count", model=PRICED) == 11
    mute_calls = [
        count
        for (name, labels), count in found.items()
        if name == "corral_model_calls_total" and ("agent", "mute") in labels
    ]
    assert sorted(mute_calls) == [0, 1]  # its one call failed

    assert value(found, "corral_runs", workflow="agent:mute", status="failed") == 1
    assert value(found, "corral_agent_run_duration_seconds_count", agent="clerk") == 1

    breaker = {"worker": "host-a:1:aaaaaa", "dependency": "mcp:payments"}
    assert value(found, "corral_breaker_state", **breaker, state="open") == 1
    assert value(found, "corral_breaker_state", **breaker, state="closed") == 0
    assert value(found, "corral_breaker_failures", **breaker) == 9
    assert value(found, "corral_breaker_opened_total", **breaker) == 2


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, by (name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found[(name, frozenset(labels.items()))]


async def test_an_empty_store_renders_an_empty_but_valid_exposition(store: Store) -> None:
    text = await render_prometheus(store)
    assert all(not family.samples for family in text_string_to_metric_families(text))


# -- corral metrics -----------------------------------------------------------------------------


def metrics_cli(db_url: str, *args: str) -> Any:
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context) -> None:
        ctx.obj = Settings(database_url=db_url, app=None, principal="tester")

    register(app, typer.Typer())
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


def test_corral_metrics_prints_tables_json_and_the_exposition(db_url: str) -> None:
    async def build() -> None:
        clock = FakeClock()
        async with Corral(store=open_store(db_url), clock=clock) as corral:
            await known_runs(corral, clock)

    asyncio.run(build())
    table = metrics_cli(db_url, "metrics")
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    [charge] = [line for line in lines if line.lstrip().startswith("charge")]
    assert charge.split() == ["charge", "10", "2", "20.0%", "5.00s", "10.00s", "10.00s"]
    [clerk] = [line for line in lines if line.lstrip().startswith("clerk")]
    assert clerk.split()[:4] == ["clerk", "1", "0", "0.0%"]
    assert "11,000" in clerk

    as_json = metrics_cli(db_url, "metrics", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert data["tenant"] == "default"
    assert data["tools"][0]["duration"]["p50"] == 5.0
    assert data["agents"][0]["cost_usd"] == pytest.approx(11 * CALL_COST)

    exposition = metrics_cli(db_url, "metrics", "--prometheus", "--since", "1h")
    assert exposition.exit_code == 0, exposition.output
    # The runs happened in 2023 (virtual time): nothing in the last hour but the breakers
    # their worker published (breakers are current state, not a window's).
    recent = text_string_to_metric_families(exposition.stdout)
    assert [f.name for f in recent if f.samples and not f.name.startswith("corral_breaker_")] == []
    whole = metrics_cli(db_url, "metrics", "--prometheus")
    assert (
        samples(whole.stdout)[
            ("corral_tool_calls_total", frozenset({"tool": "charge", "outcome": "failed"}.items()))
        ]
        == 2
    )

    bad = metrics_cli(db_url, "metrics", "--since", "yesterday")
    assert bad.exit_code == 2
    assert "use a number and a unit" in bad.stderr


def test_since_reads_durations_for_people() -> None:
    assert [parse_since(text) for text in ("90s", "30m", "1h", "7d", "2w", "1.5h")] == [
        90.0,
        1800.0,
        3600.0,
        604800.0,
        1209600.0,
        5400.0,
    ]
    with pytest.raises(UsageError):
        parse_since("7 days")
