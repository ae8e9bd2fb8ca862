"""The daily cost roll-up gives the same reports as adding up the journal call by call.

Runs make model calls over several days (runs that span midnight, trees of child runs, two
tenants, several principals, priced, tiered, unpriced and time-of-day-priced models). Every
report, for every dimension and many windows (whole days, windows that cut days, open ends), is
compared with an oracle that reads the journal one step at a time (`step_view`), prices each
call alone and counts runs by their first call. Then calls arrive in days already rolled up,
before and after the indexer has seen them, and the reports must follow.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest

from corral import Corral
from corral.observe import step_view
from corral.observe.cost_days import DAY_SECONDS, day_of, hour_of, roll_up
from corral.observe.costs import COST_DIMENSIONS, CostDimension, CostRow, cost_report
from corral.observe.search import catch_up
from corral.store import RunRecord, Store
from corral.store.scripts import Script, Statement
from corral.testing import FakeClock

MODELS = (
    "openai:gpt-4o-mini",
    "anthropic:claude-sonnet-4-5",  # tiered by input tokens
    "deepseek:deepseek-chat",  # priced by time of day: priced call by call
    "nowhere:unpriced-model",  # no known price: counted, not priced
)
AGENTS = ("triage", "refunds", "writer")
START = 1_700_006_400.0
"""Midnight UTC (a multiple of a day), so the plan's days are whole days."""


@dataclass(frozen=True)
class Call:
    run_id: str
    root_id: str
    agent: str
    model: str
    at: float
    tokens: int
    cost: float | None
    tenant: str
    workflow: str
    user: str | None


async def journal_calls(store: Store) -> list[Call]:
    """Every model call of every run, read one step at a time from the journal."""
    runs = await store.list_runs(limit=10_000)
    by_id = {run.run_id: run for run in runs}

    def root_of(run: RunRecord) -> RunRecord:
        while run.parent_run_id is not None:
            run = by_id[run.parent_run_id]
        return run

    calls = []
    for run in runs:
        root = root_of(run)
        for record in await store.load_journal(run.run_id):
            step = step_view(record)
            if step.category != "model" or step.status != "succeeded":
                continue
            assert step.usage is not None
            assert step.model
            assert step.agent
            assert step.finished_at is not None
            calls.append(
                Call(
                    run.run_id,
                    root.run_id,
                    step.agent,
                    step.model,
                    step.finished_at,
                    step.usage.total_tokens,
                    step.cost_usd,
                    run.tenant,
                    root.workflow,
                    root.started_by,
                )
            )
    return calls


def expected(
    calls: Sequence[Call], by: CostDimension, since: float | None, until: float | None
) -> dict[str | None, tuple[int, int, int, int, float]]:
    """key → (runs, calls, tokens, unpriced calls, dollars), added up call by call."""

    def key(call: Call) -> str | None:
        return {
            "agent": call.agent,
            "model": call.model,
            "tenant": call.tenant,
            "user": call.user,
            "workflow": call.workflow,
        }[by]

    def owner(call: Call) -> str:
        return call.run_id if by in ("agent", "model") else call.root_id

    first: dict[tuple[str | None, str], float] = {}
    for call in calls:
        pair = (key(call), owner(call))
        first[pair] = min(first.get(pair, call.at), call.at)

    def inside(at: float) -> bool:
        return (since is None or at >= since) and (until is None or at < until)

    rows: dict[str | None, list[Any]] = {}
    for call in calls:
        if not inside(call.at):
            continue
        row = rows.setdefault(key(call), [0, 0, 0, 0, 0.0])
        row[1] += 1
        row[2] += call.tokens
        if call.cost is None:
            row[3] += 1
        else:
            row[4] += call.cost
    for (found, _), at in first.items():
        if inside(at) and found in rows:
            rows[found][0] += 1
    return {k: (v[0], v[1], v[2], v[3], v[4]) for k, v in rows.items()}


def as_table(rows: Sequence[CostRow]) -> dict[str | None, tuple[int, int, int, int, float]]:
    return {
        r.key: (r.runs, r.model_calls, r.total_tokens, r.unpriced_calls, r.cost_usd) for r in rows
    }


def assert_same(
    got: dict[str | None, tuple[int, int, int, int, float]],
    want: dict[str | None, tuple[int, int, int, int, float]],
    label: str,
) -> None:
    assert set(got) == set(want), label
    for key, (runs, calls, tokens, unpriced, dollars) in want.items():
        assert got[key][:4] == (runs, calls, tokens, unpriced), f"{label} {key}"
        assert got[key][4] == pytest.approx(dollars, rel=1e-9, abs=1e-12), f"{label} {key}"


def with_planned(corral: Corral, clock: FakeClock) -> Corral:
    """`corral` with the `planned` workflow: it makes the model calls of its plan, each
    finishing after a pause on `clock`, and may start a child run with a plan of its own."""

    def model_call(model: str, tokens: int, pause: float) -> dict[str, Any]:
        clock.advance(pause)  # the call takes this long: it finishes `pause` later
        return {
            "model": model,
            "content": "ok",
            "usage": {"input_tokens": tokens, "output_tokens": tokens // 10},
        }

    @corral.workflow(name="planned")
    async def planned_run(ctx: Any, plan: dict[str, Any]) -> int:
        for agent, model, tokens, pause in plan["calls"]:
            await ctx.step(model_call, model, tokens, pause, name=f"model:{agent}")
        if plan.get("child"):
            await ctx.run_child("planned", plan["child"])
        return len(plan["calls"])

    return corral


async def run_plan(worker: Corral, plan: dict[str, Any], *, tenant: str, user: str | None) -> None:
    starter = Corral(store=worker.store, clock=worker.clock, tenant=tenant)
    await starter.start(worker.workflows.resolve("planned"), plan, started_by=user)
    await worker.run_until_idle()


@pytest.fixture
def planned(corral: Corral, clock: FakeClock) -> Corral:
    clock.advance(START - clock.now())
    return with_planned(corral, clock)


def random_plan(rng: random.Random, depth: int = 0) -> dict[str, Any]:
    calls = [
        (
            rng.choice(AGENTS),
            rng.choice(MODELS),
            rng.choice((300, 2_000, 250_000)),  # 250k: above the tiered model's threshold
            rng.choice((30.0, 600.0, 5 * 3600.0, 20 * 3600.0)),  # some runs span midnight
        )
        for _ in range(rng.randint(1, 4))
    ]
    plan: dict[str, Any] = {"calls": calls}
    if depth < 2 and rng.random() < 0.35:
        plan["child"] = random_plan(rng, depth + 1)
    return plan


async def test_reports_from_the_roll_up_equal_the_journal_added_up(
    planned: Corral, store: Store, clock: FakeClock
) -> None:
    rng = random.Random(20261121)
    for _ in range(24):
        tenant, user = rng.choice(("default", "acme")), rng.choice(("ada", None))
        await run_plan(planned, random_plan(rng), tenant=tenant, user=user)
        clock.advance(rng.choice((60.0, 3 * 3600.0, 9 * 3600.0)))
    calls = await journal_calls(store)
    days = sorted({day_of(call.at) for call in calls})
    assert len(days) >= 4, "the plan must spread calls over several days"
    assert await catch_up(store) > 0
    assert await roll_up(store) == len({hour_of(call.at) for call in calls})
    for table in ("cost_hours", "cost_day_keys WHERE dimension = 'agent'"):
        rows = await store.read_script(partial(_count, f"SELECT count(*) FROM {table}"))
        summed = await store.read_script(partial(_count, f"SELECT sum(calls) FROM {table}"))
        assert 0 < rows < len(calls) == summed, table

    first, last = days[0] * DAY_SECONDS, (days[-1] + 1) * DAY_SECONDS
    windows: list[tuple[float | None, float | None]] = [
        (None, None),
        (first + DAY_SECONDS, None),  # whole days only
        (first + 5 * 3600.0, None),  # cuts the first day
        (None, last - DAY_SECONDS - 7 * 3600.0),  # cuts a day from above
        (first + 30 * 3600.0, first + 70 * 3600.0),  # cuts both ends, whole days between
        (first + 2 * 3600.0, first + 9 * 3600.0),  # inside one day
        (first + 5.5 * 3600.0, first + 50.25 * 3600.0),  # cuts hours: hour rows, then a day
        (first + 26 * 3600.0, first + 27 * 3600.0),  # one whole hour
        (first + 26.5 * 3600.0, first + 26.75 * 3600.0),  # inside one hour
        (last + DAY_SECONDS, None),  # nothing
    ]
    for since, until in windows:
        for by in COST_DIMENSIONS:
            got = as_table(await cost_report(store, by=by, since=since, until=until))
            assert_same(got, expected(calls, by, since, until), f"{by} {since}..{until}")

    acme = [call for call in calls if call.tenant == "acme"]
    for by in COST_DIMENSIONS:
        got = as_table(await cost_report(store, by=by, tenant="acme", since=first + 3600.0))
        assert_same(got, expected(acme, by, first + 3600.0, None), f"acme {by}")


async def test_a_call_in_a_day_already_rolled_up_is_counted_before_and_after_indexing(
    planned: Corral, store: Store, clock: FakeClock
) -> None:
    plan = {"calls": [("triage", MODELS[0], 1000, 60.0)]}
    await run_plan(planned, plan, tenant="default", user="ada")
    clock.advance(3 * DAY_SECONDS)
    await run_plan(planned, plan, tenant="default", user="bob")
    (before,) = await cost_report(store, by="agent")
    assert (before.model_calls, before.runs) == (2, 2)
    model_days = "SELECT count(*) FROM cost_day_keys WHERE dimension = 'model'"
    assert await store.read_script(lambda dialect: _count(model_days)) == 2

    # A worker whose clock is three days behind makes a call in the first, rolled-up day, as a
    # call that finished before midnight may be committed after its day was summed.
    behind = FakeClock(START + 3600.0)
    late = with_planned(
        Corral(store=store, clock=behind, heartbeat_interval=None, poll_interval=0.5), behind
    )
    await run_plan(late, plan, tenant="default", user="cy")
    for index_first in (False, True):  # the note not indexed yet, then indexed and re-summed
        rows = await cost_report(store, by="user", index_first=index_first)
        assert {r.key: (r.model_calls, r.runs) for r in rows} == {
            "ada": (1, 1),
            "bob": (1, 1),
            "cy": (1, 1),
        }
    stale = await store.read_script(lambda dialect: _count("SELECT count(*) FROM cost_stale_hours"))
    assert stale == 0
    model_calls = "SELECT sum(calls) FROM cost_day_keys WHERE dimension = 'model'"
    rolled = await store.read_script(lambda dialect: _count(model_calls))
    assert rolled == 3


def _count(statement: str, dialect: object = None) -> Script[int]:
    found = yield Statement(statement)
    return int(found.scalar())
