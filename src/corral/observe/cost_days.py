"""The cost roll-up: model calls summed per UTC hour and per UTC day, so cost reports stay fast.

A cost report over a month of a busy fleet would otherwise add up hundreds of thousands of model
calls. `cost_hours` and `cost_days` (migrations 0008, 0011) hold the sums of each hour's and each
day's calls per tenant, root workflow, starting principal, agent, model and price band: a few
thousand rows a day. A report (`corral.observe.costs`) reads whole days from the day rows, the
whole hours at its window's edges from the hour rows, and from the journal only the rest: the
parts of the first and last hour its window cuts, the current hour (never rolled up: it is still
changing) and any hour that is out of date. One statement adds all three.

How the roll-up follows the journal. The search indexer already reads every change note the
journal's triggers write (`search_changes`); for each one that is a model call it marks the
call's hour in `cost_stale_hours`. `roll_up` re-sums each marked hour that is over from the
journal, re-sums the hour's day from its hour rows, and unmarks the hour unless a newer note
marked it again meanwhile. A report treats as out of date both the marked hours and the hours of
notes not indexed yet, and a day with any such hour, so it never reads a stale sum. A day row is
complete once none of its hours is marked: every call was marked before it was summed. The
roll-up adds nothing to the engine's writes: the notes are written anyway, for search.

Counting runs by adding rows. A row cannot hold a set of run ids, so each call says whether it
is its run's first call of its agent (`agent_runs`), of its model (`model_runs`) and its tree's
first call at all (`tree_runs`); a report counts the runs whose first call of its key is in the
window by adding those flags. The flags are absolute (first of all, not first in the hour), so
rows of any hours and days add up. Over all time that is every run with a call; over a window,
the runs that made their first such call in it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Iterable
from functools import cache, partial
from typing import Literal, get_args

from genai_prices import data_snapshot
from genai_prices.types import ModelPrice, TieredPrices

from corral.store import Store, unscoped
from corral.store.scripts import Dialect, Script, Statement

DAY_SECONDS = 86_400
"""One roll-up day, in seconds (UTC days: a day starts at a multiple of it)."""
HOUR_SECONDS = 3_600
"""One roll-up hour, in seconds."""
HOURS_PER_DAY = DAY_SECONDS // HOUR_SECONDS

_PG_LOCK = 7008
"""Advisory lock key: one roll-up at a time per schema on PostgreSQL."""

CALL_COLUMNS = (
    "tenant",
    "workflow",
    "started_by",
    "agent",
    "model",
    "band",
    "input_tokens",
    "output_tokens",
    "finished_at",
    "agent_first",
    "model_first",
    "tree_first",
)
"""What `calls_between` selects per model call."""


def day_of(moment: float) -> int:
    """The roll-up day of a moment (seconds since the epoch)."""
    return math.floor(moment / DAY_SECONDS)


def hour_of(moment: float) -> int:
    """The roll-up hour of a moment (seconds since the epoch)."""
    return math.floor(moment / HOUR_SECONDS)


FirstKind = Literal["agent", "model", "tree"]
"""Whose first call a flag marks: the run's of its agent, the run's of its model, its tree's."""
FIRST_KINDS: tuple[FirstKind, ...] = ("agent", "model", "tree")

CostDimension = Literal["agent", "workflow", "tenant", "user", "model"]
"""What a cost report groups model calls by."""

COST_DIMENSIONS: tuple[CostDimension, ...] = get_args(CostDimension)

DIMENSION_KEYS: dict[CostDimension, tuple[str, FirstKind]] = {
    "agent": ("agent", "agent"),
    "workflow": ("workflow", "tree"),
    "tenant": ("tenant", "tree"),
    "user": ("started_by", "tree"),
    "model": ("model", "model"),
}
"""Each dimension's key among the columns of `cost_hours` and of `calls_between`, and whose first
calls count its runs (`<kind>_runs`, `<kind>_first`). Tenant and user are read from the call's own
run: a child run is created in its parent's tenant and carries its parent's `started_by`, so they
are the root's (the engine's `_start_child`)."""


def calls_between(
    start: float,
    end: float | None,
    *,
    tenant: str | None = None,
    firsts: Collection[FirstKind] = FIRST_KINDS,
) -> tuple[str, list[object]]:
    """SQL selecting each model call that finished in [start, end) with `CALL_COLUMNS`, and its
    parameters.

    The `*_first` flags named in `firsts` are 1 on a run's first call of its agent, on its first
    call of its model, and on its tree's first call: first within [start, end) by a window
    function, and first of all because the run (or its tree's root) was created at or after
    `start` or, for runs older than that, no such call finished before `start`. Only runs that
    span `start` need that look back. Flags not asked for are 0 and cost nothing (each flag is
    a sort of the calls): a report needs one, pricing call by call none.
    """
    where = ["s.call_model IS NOT NULL", "s.finished_at >= ?"]
    params: list[object] = [start]
    if end is not None:
        where.append("s.finished_at < ?")
        params.append(end)
    if tenant is not None:
        where.append("r.tenant = ?")
        params.append(tenant)
    inner = (
        "SELECT r.tenant AS tenant, coalesce(root.workflow, r.workflow) AS workflow,"
        " r.started_by AS started_by, s.name AS agent, s.call_model AS model,"
        f" {band_sql()} AS band, s.call_input_tokens AS input_tokens,"
        " s.call_output_tokens AS output_tokens, s.finished_at AS finished_at,"
        " s.run_id AS run_id, r.created_at AS created_at,"
        " coalesce(r.root_run_id, r.run_id) AS tree,"
        " coalesce(root.created_at, r.created_at) AS tree_created"
    )
    ranks = {
        "agent": "PARTITION BY s.run_id, s.name ORDER BY s.finished_at, s.seq",
        "model": "PARTITION BY s.run_id, s.call_model ORDER BY s.finished_at, s.seq",
        "tree": "PARTITION BY coalesce(r.root_run_id, r.run_id)"
        " ORDER BY s.finished_at, s.run_id, s.seq",
    }
    # CASE, not OR: the look back runs only for the first call of a run older than `start`.
    earlier = "SELECT 1 FROM steps e WHERE e.run_id = c.run_id AND e.finished_at < ? AND "
    flags = {
        "agent": "CASE WHEN agent_rank <> 1 THEN 0 WHEN created_at >= ? THEN 1"
        f" WHEN EXISTS ({earlier}e.name = c.agent AND e.call_model IS NOT NULL) THEN 0"
        " ELSE 1 END",
        "model": "CASE WHEN model_rank <> 1 THEN 0 WHEN created_at >= ? THEN 1"
        f" WHEN EXISTS ({earlier}e.call_model = c.model) THEN 0 ELSE 1 END",
        "tree": "CASE WHEN tree_rank <> 1 THEN 0 WHEN tree_created >= ? THEN 1"
        " WHEN EXISTS (SELECT 1 FROM runs t JOIN steps e ON e.run_id = t.run_id"
        " WHERE t.root_run_id = c.tree AND e.finished_at < ? AND e.call_model IS NOT NULL)"
        " THEN 0 ELSE 1 END",
    }
    for kind in FIRST_KINDS:
        if kind in firsts:
            inner += f", row_number() OVER ({ranks[kind]}) AS {kind}_rank"
    columns: list[str] = []
    flag_params: list[object] = []
    for kind in FIRST_KINDS:
        if kind in firsts:
            columns.append(f"{flags[kind]} AS {kind}_first")
            flag_params += [start, start]
        else:
            columns.append(f"0 AS {kind}_first")
    joins = (
        " FROM steps s JOIN runs r ON r.run_id = s.run_id"
        " LEFT JOIN runs root ON root.run_id = r.root_run_id"
        f" WHERE {' AND '.join(where)}"
    )
    outer = (
        "SELECT tenant, workflow, started_by, agent, model, band, input_tokens, output_tokens,"
        f" finished_at, {', '.join(columns)} FROM ({inner}{joins}) c"
    )
    return outer, [*flag_params, *params]


async def roll_up(store: Store, *, now: float | None = None) -> int:
    """Re-sum every out-of-date hour that is over (before the current hour, UTC), and the days
    they are in; how many hours. Outside any tenant scope (`corral.store.unscoped`): an hour is
    re-summed for every tenant at once."""
    current = hour_of(time.time() if now is None else now)
    with unscoped():
        found = await store.read_script(lambda dialect: _stale_hours(before=current))
        by_day: dict[int, list[tuple[int, int]]] = {}
        for hour, marks in found:
            by_day.setdefault(hour // HOURS_PER_DAY, []).append((hour, marks))
        done = 0
        for day, hours in by_day.items():
            if await store.run_script(partial(_roll_up_hours, day, hours)):
                done += len(hours)
        return done


def mark_stale(finished: Iterable[float]) -> Script[None]:
    """Mark the hours of these model calls' finishing moments out of date (the search indexer
    calls it, in the transaction that consumes the calls' change notes)."""
    hours = sorted({hour_of(moment) for moment in finished})
    if hours:
        yield Statement(
            "INSERT INTO cost_stale_hours (hour, marks) VALUES (?, 1)"
            " ON CONFLICT (hour) DO UPDATE SET marks = cost_stale_hours.marks + 1",
            [(hour,) for hour in hours],
            many=True,
        )


def stale_hours(start: int, end: int) -> Script[set[int]]:
    """The hours in [start, end) whose roll-up must not be read: marked out of date, or with a
    model call whose change note is not indexed yet."""
    marked = yield Statement(
        "SELECT hour FROM cost_stale_hours WHERE hour >= ? AND hour < ?", (start, end)
    )
    pending = yield Statement(
        "SELECT DISTINCT s.finished_at FROM search_changes c"
        " JOIN steps s ON s.run_id = c.run_id AND s.seq = c.seq"
        " WHERE s.call_model IS NOT NULL"
    )
    hours = {int(row[0]) for row in marked.rows}
    hours.update(hour_of(float(row[0])) for row in pending.rows)
    return {hour for hour in hours if start <= hour < end}


def _stale_hours(*, before: int) -> Script[list[tuple[int, int]]]:
    found = yield Statement(
        "SELECT hour, marks FROM cost_stale_hours WHERE hour < ? ORDER BY hour", (before,)
    )
    return [(int(row[0]), int(row[1])) for row in found.rows]


_SUMMED = (
    "tenant, workflow, started_by, agent, model, band, calls, input_tokens, output_tokens,"
    " first_at, last_at, agent_runs, model_runs, tree_runs"
)
_KEY = "tenant, workflow, started_by, agent, model, band"


def _roll_up_hours(day: int, hours: list[tuple[int, int]], dialect: Dialect) -> Script[bool]:
    """Re-sum `hours` (with the marks read) of `day` from the journal, then the day's rows of
    each dimension from its hour rows; unmark each hour that no note marked since."""
    if dialect == "postgresql":
        locked = yield Statement(
            f"SELECT pg_try_advisory_xact_lock(hashtext(current_schema()), {_PG_LOCK})"
        )
        if not locked.scalar():
            return False  # another roll-up is at work; it will re-sum these hours
    # The hour of a call, as `hour_of` rounds it (SQLite's CAST truncates: moments are > 0).
    hour = (
        f"floor(finished_at / {HOUR_SECONDS})::bigint"
        if dialect == "postgresql"
        else f"CAST(finished_at / {HOUR_SECONDS} AS INTEGER)"
    )
    for begin, end in consecutive_spans(sorted(h for h, _ in hours)):
        yield Statement("DELETE FROM cost_hours WHERE hour >= ? AND hour < ?", (begin, end))
        calls, params = calls_between(begin * HOUR_SECONDS, end * HOUR_SECONDS)
        yield Statement(
            f"INSERT INTO cost_hours (hour, {_SUMMED})"
            f" SELECT {hour}, {_KEY}, count(*), sum(input_tokens), sum(output_tokens),"
            " min(finished_at), max(finished_at), sum(agent_first), sum(model_first),"
            f" sum(tree_first) FROM ({calls}) d GROUP BY {hour}, {_KEY}",
            params,
        )
    yield Statement("DELETE FROM cost_day_keys WHERE day = ?", (day,))
    for dimension, (key, first) in DIMENSION_KEYS.items():
        yield Statement(
            "INSERT INTO cost_day_keys (dimension, day, tenant, k, model, band, calls,"
            " input_tokens, output_tokens, first_at, last_at, runs)"
            f" SELECT ?, CAST(? AS BIGINT), tenant, {key}, model, band, sum(calls),"
            " sum(input_tokens), sum(output_tokens), min(first_at), max(last_at),"
            f" sum({first}_runs) FROM cost_hours WHERE hour >= ? AND hour < ?"
            f" GROUP BY tenant, {key}, model, band",
            (dimension, day, day * HOURS_PER_DAY, (day + 1) * HOURS_PER_DAY),
        )
    yield Statement("DELETE FROM cost_stale_hours WHERE hour = ? AND marks = ?", hours, many=True)
    return True


def consecutive_spans(units: Iterable[int]) -> list[tuple[int, int]]:
    """Ascending `units` (hours or days) as [first, last) runs of consecutive ones."""
    spans: list[tuple[int, int]] = []
    for unit in units:
        if spans and spans[-1][1] == unit:
            spans[-1] = (spans[-1][0], unit + 1)
        else:
            spans.append((unit, unit + 1))
    return spans


@cache
def _tier_starts() -> tuple[int, ...]:
    """Every input-token threshold of a tiered price `genai-prices` knows, ascending."""
    starts: set[int] = set()
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            prices = model.prices
            entries = [prices] if isinstance(prices, ModelPrice) else [c.prices for c in prices]
            entries += [variant.prices for variant in model.price_variants or ()]
            for entry in entries:
                for value in vars(entry).values():
                    if isinstance(value, TieredPrices):
                        starts.update(int(tier.start) for tier in value.tiers)
    return tuple(sorted(starts))


@cache
def band_sql() -> str:
    """SQL for a call's price band: how many tier thresholds its input tokens are above.

    A tier applies to a call whose input tokens are *above* its start (`genai-prices`), so calls
    in one band get the same tier of every tiered price. The thresholds are integers from the
    price data, written into the SQL; the smallest first, as most calls are below it.
    """
    tokens = "s.call_input_tokens"
    starts = _tier_starts()
    if not starts:
        return "0"
    whens = " ".join(
        f"WHEN {tokens} <= {start:d} THEN {band:d}" for band, start in enumerate(starts)
    )
    return f"CASE {whens} WHEN {tokens} > {starts[-1]:d} THEN {len(starts):d} ELSE 0 END"


__all__ = [
    "COST_DIMENSIONS",
    "DAY_SECONDS",
    "DIMENSION_KEYS",
    "HOURS_PER_DAY",
    "HOUR_SECONDS",
    "CostDimension",
    "band_sql",
    "calls_between",
    "consecutive_spans",
    "day_of",
    "hour_of",
    "mark_stale",
    "roll_up",
    "stale_hours",
]
