"""Budgets: reserve before a call, settle after; concurrent calls never overspend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

import pytest

from corral.errors import UsageError
from corral.governance.audit import AuditRecord, read_entries
from corral.governance.budgets import (
    Amount,
    BudgetBreach,
    Limit,
    ReserveOutcome,
    budget_exceeded,
    call_amounts,
    limits_for,
    period_for,
    release,
    reserve,
    settle,
    spent,
)
from corral.governance.documents import BudgetLimit
from corral.store import Store, open_store
from corral.store.scripts import Dialect, Script, Statement

TENANT = "acme"
NOW = 1_700_000_000.0  # 2023-11-14 UTC
DAY = "2023-11-14"
RUN = "run:r1"


async def reserve_on(
    store: Store,
    reservation_id: str,
    amounts: Sequence[Amount],
    limits: Sequence[Limit],
    *,
    now: float = NOW,
) -> ReserveOutcome:
    def script(dialect: Dialect) -> Script[ReserveOutcome]:
        return reserve(
            tenant=TENANT,
            reservation_id=reservation_id,
            amounts=amounts,
            limits=limits,
            now=now,
            dialect=dialect,
        )

    return await store.run_script(script)


async def settle_on(store: Store, reservation_id: str, actual: Sequence[Amount]) -> None:
    await store.run_script(
        lambda dialect: settle(
            reservation_id=reservation_id, actual=actual, now=NOW + 1, dialect=dialect
        )
    )


async def counters(store: Store) -> dict[tuple[str, str, str], tuple[float, float]]:
    def script(dialect: Dialect) -> Script[dict[tuple[str, str, str], tuple[float, float]]]:
        result = yield Statement(
            "SELECT scope, period, metric, used, reserved FROM budget_counters WHERE tenant = ?",
            (TENANT,),
        )
        return {(r[0], r[1], r[2]): (float(r[3]), float(r[4])) for r in result.rows}

    return await store.read_script(script)


async def audit(store: Store, kind: str) -> list[AuditRecord]:
    records = await store.read_script(lambda dialect: read_entries(TENANT))
    return [record for record in records if record.kind == kind]


@contextlib.asynccontextmanager
async def more_stores(db_url: str, count: int) -> AsyncIterator[list[Store]]:
    """Other stores on the test's database: other connections, as other workers have."""
    async with contextlib.AsyncExitStack() as stack:
        stores = []
        for _ in range(count):
            other = open_store(db_url)
            await other.open()
            stack.push_async_callback(other.close)
            stores.append(other)
        yield stores


TOOL_CALL: list[Amount] = [(RUN, "run", "tool_calls", 1.0)]
TEN_CALLS: list[Limit] = [(RUN, "run", "tool_calls", 10.0, None, "ten-calls")]


async def test_fifty_concurrent_reservations_against_ten_grant_exactly_ten(
    store: Store, db_url: str
) -> None:
    # The counter exists already (as it does mid-run): the reservations contend on its row.
    assert (await reserve_on(store, "first-look", [], TEN_CALLS)).granted
    async with more_stores(db_url, 4) as others:
        stores = [store, *others]
        outcomes = await asyncio.gather(
            *(
                reserve_on(stores[n % len(stores)], f"call-{n}", TOOL_CALL, TEN_CALLS)
                for n in range(50)
            )
        )
    granted = [o for o in outcomes if o.granted]
    refused = [o for o in outcomes if not o.granted]
    assert (len(granted), len(refused)) == (10, 40)
    assert await counters(store) == {(RUN, "run", "tool_calls"): (0.0, 10.0)}
    for outcome in refused:
        [breach] = outcome.exceeded
        assert (breach.budget, breach.metric, breach.limit, breach.used) == (
            "ten-calls",
            "tool_calls",
            10.0,
            10.0,
        )
    exceeded = await audit(store, "budget.exceeded")
    assert len(exceeded) == 40
    assert {e.subject for e in exceeded} == {
        f"reservation:call-{n}" for n, o in enumerate(outcomes) if not o.granted
    }
    assert exceeded[0].decision_data["exceeded"][0]["budget"] == "ten-calls"


async def test_reserving_again_after_a_crash_never_counts_twice(store: Store) -> None:
    first = await reserve_on(store, "r1:4", TOOL_CALL, TEN_CALLS)
    again = await reserve_on(store, "r1:4", TOOL_CALL, TEN_CALLS)
    assert first == again == ReserveOutcome(granted=True)
    assert await counters(store) == {(RUN, "run", "tool_calls"): (0.0, 1.0)}
    await settle_on(store, "r1:4", TOOL_CALL)
    await settle_on(store, "r1:4", TOOL_CALL)  # settled twice: once
    assert await reserve_on(store, "r1:4", TOOL_CALL, TEN_CALLS) == ReserveOutcome(granted=True)
    assert await counters(store) == {(RUN, "run", "tool_calls"): (1.0, 0.0)}


async def test_a_refusal_reserves_nothing_and_is_audited_once(store: Store) -> None:
    limits: list[Limit] = [
        (RUN, "run", "tokens", 1000.0, None, "run-tokens"),
        ("tenant", DAY, "tokens", 5000.0, None, "tenant-tokens"),
    ]
    amounts: list[Amount] = [(RUN, "run", "tokens", 800.0), ("tenant", DAY, "tokens", 800.0)]
    assert (await reserve_on(store, "a", amounts, limits)).granted
    refused = await reserve_on(store, "b", amounts, limits)
    assert not refused.granted
    assert refused.exceeded == [
        BudgetBreach(
            budget="run-tokens",
            scope=RUN,
            period="run",
            metric="tokens",
            limit=1000.0,
            used=800.0,
            amount=800.0,
        )
    ]
    # The tenant counter had room, but nothing of a refused reservation is reserved.
    assert await counters(store) == {
        (RUN, "run", "tokens"): (0.0, 800.0),
        ("tenant", DAY, "tokens"): (0.0, 800.0),
    }
    assert not (await reserve_on(store, "b", amounts, limits)).granted  # retried: same refusal
    assert len(await audit(store, "budget.exceeded")) == 1


async def test_settling_replaces_the_estimate_with_what_was_used(store: Store) -> None:
    estimate = call_amounts(run_id="r1", agent="refunds", now=NOW, tokens=2000, usd=0.02)
    assert estimate == [
        (RUN, "run", "tokens", 2000.0),
        (RUN, "run", "usd", 0.02),
        ("agent:refunds", DAY, "tokens", 2000.0),
        ("agent:refunds", DAY, "usd", 0.02),
        ("tenant", DAY, "tokens", 2000.0),
        ("tenant", DAY, "usd", 0.02),
    ]
    assert (await reserve_on(store, "r1:2", estimate, [])).granted
    totals = await store.read_script(
        lambda d: spent(tenant=TENANT, run_id="r1", agent="refunds", now=NOW)
    )
    assert totals["run_tokens"] == totals["agent_tokens_today"] == 2000.0  # reserved counts
    actual = call_amounts(run_id="r1", agent="refunds", now=NOW, tokens=1234, usd=0.0123)
    await settle_on(store, "r1:2", actual)
    values = await counters(store)
    assert values[(RUN, "run", "tokens")] == (1234.0, 0.0)
    assert values[(RUN, "run", "usd")] == (0.0123, 0.0)
    assert values[("tenant", DAY, "usd")] == (0.0123, 0.0)
    totals = await store.read_script(
        lambda d: spent(tenant=TENANT, run_id="r1", agent="refunds", now=NOW)
    )
    assert totals == {
        "run_usd": 0.0123,
        "run_tokens": 1234.0,
        "run_tool_calls": 0.0,
        "agent_usd_today": 0.0123,
        "agent_tokens_today": 1234.0,
        "agent_tool_calls_today": 0.0,
        "tenant_usd_today": 0.0123,
        "tenant_tokens_today": 1234.0,
        "tenant_tool_calls_today": 0.0,
    }
    tomorrow = await store.read_script(
        lambda d: spent(tenant=TENANT, run_id="r2", agent="refunds", now=NOW + 86400)
    )
    assert set(tomorrow.values()) == {0.0}


async def test_a_released_reservation_gives_its_amount_back(store: Store) -> None:
    assert (await reserve_on(store, "x", TOOL_CALL, TEN_CALLS)).granted
    await store.run_script(lambda dialect: release("x", NOW, dialect=dialect))
    await store.run_script(lambda dialect: release("x", NOW, dialect=dialect))
    assert await counters(store) == {(RUN, "run", "tool_calls"): (0.0, 0.0)}
    await settle_on(store, "x", TOOL_CALL)  # released: settling changes nothing
    assert await counters(store) == {(RUN, "run", "tool_calls"): (0.0, 0.0)}
    with pytest.raises(UsageError, match="no budget reservation 'nope'"):
        await settle_on(store, "nope", TOOL_CALL)


async def test_a_budget_already_spent_refuses_calls_that_add_nothing_to_it(store: Store) -> None:
    usd: list[Limit] = [(RUN, "run", "usd", 1.0, None, "run-usd")]
    assert (await reserve_on(store, "m1", [(RUN, "run", "usd", 0.5)], usd)).granted
    await settle_on(store, "m1", [(RUN, "run", "usd", 1.5)])  # the call cost more than estimated
    refused = await reserve_on(store, "t1", TOOL_CALL, usd)
    assert not refused.granted
    assert refused.exceeded[0].used == 1.5


async def test_crossing_a_soft_limit_raises_one_alert(store: Store) -> None:
    limits: list[Limit] = [(RUN, "run", "tool_calls", 10.0, 8.0, "calls")]
    outcomes = [await reserve_on(store, f"c{n}", TOOL_CALL, limits) for n in range(10)]
    crossed = [n for n, outcome in enumerate(outcomes) if outcome.soft_crossed]
    assert crossed == [8]  # the ninth call goes over 8
    [soft] = outcomes[8].soft_crossed
    assert (soft.budget, soft.soft_limit, soft.limit, soft.used) == ("calls", 8.0, 10.0, 9.0)
    [alert] = await audit(store, "budget.soft_limit")
    assert alert.subject == "reservation:c8"
    assert alert.decision_data["crossed"][0]["budget"] == "calls"
    assert await reserve_on(store, "c8", TOOL_CALL, limits) == outcomes[8]  # replayed as it was


async def test_limits_come_from_policy_budgets(store: Store) -> None:
    budgets = [
        BudgetLimit(name="run-usd", scope="run", metric="usd", limit=2.0, soft_limit=1.5),
        BudgetLimit(name="agent-tokens", scope="agent", metric="tokens", limit=10_000),
        BudgetLimit(name="tenant-calls", scope="tenant", metric="tool_calls", limit=500),
    ]
    assert limits_for(budgets, run_id="r1", agent="refunds", now=NOW) == [
        (RUN, "run", "usd", 2.0, 1.5, "run-usd"),
        ("agent:refunds", DAY, "tokens", 10_000.0, None, "agent-tokens"),
        ("tenant", DAY, "tool_calls", 500.0, None, "tenant-calls"),
    ]
    # Without an agent, agent budgets do not apply.
    assert len(limits_for(budgets, run_id="r1", agent=None, now=NOW)) == 2


def test_periods_and_the_error_for_the_loop() -> None:
    assert period_for("run", NOW) == period_for("run:r1", NOW) == "run"
    assert period_for("agent", NOW) == period_for("tenant", NOW) == DAY
    assert period_for("tenant", NOW + 86400) == "2023-11-15"
    breach = BudgetBreach(
        budget="run-usd", scope=RUN, period="run", metric="usd", limit=2.0, used=1.9, amount=0.2
    )
    error = budget_exceeded(breach)
    assert error.code == "budget_exceeded"
    assert error.to_dict()["budget"] == "run-usd"
    assert (error.ids["scope"], error.ids["metric"], error.ids["limit"], error.ids["used"]) == (
        RUN,
        "usd",
        2.0,
        1.9,
    )


async def test_bad_amounts_are_refused_before_anything_changes(store: Store) -> None:
    with pytest.raises(UsageError, match="unknown budget metric 'dollars'"):
        await reserve_on(store, "bad", [(RUN, "run", "dollars", 1.0)], [])
    with pytest.raises(UsageError, match="cannot be negative"):
        await reserve_on(store, "bad", [(RUN, "run", "usd", -1.0)], [])
    assert await counters(store) == {}
