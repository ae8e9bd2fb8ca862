"""Cost attribution: what model calls cost, by agent, workflow, tenant, user or model.

A model call is one succeeded `model:<agent>` journal step; its cost is what `genai-prices` says
its usage cost on the model that answered (`StepView.cost_usd`: priced at the time it finished;
the scripted model is free; a model without a known price is *unpriced*: its tokens are counted,
its dollars are not, and `unpriced_calls` says how many such calls a row holds).

Every model call counts exactly once in a report, under one key:

- `agent`: the agent that made it (the `<agent>` of its `model:<agent>` step), whichever run
  it ran in;
- `workflow`: the workflow of the **root** run of its run's tree: a delegated agent's calls count
  under the workflow (or agent, `agent:<name>`) that was started, not under `agent:<delegate>`;
- `tenant`: the tenant of its run (a child run is always in its root's tenant);
- `user`: the principal who started the root run (`runs.started_by`, which child runs
  inherit); None when it was not recorded;
- `model`: the model that answered (`provider:name`).

So the rows of one report partition the same set of calls: their sums (calls, tokens, dollars)
are the same whatever `by` is. A row's `runs` counts the runs whose first call under its key
finished in the window: for `workflow`, `tenant` and `user` the *root* runs (each tree counts
once, at its first call), for `agent` and `model` the runs themselves (at their first call of
that agent or model). Over all time that is every run with a call under the key. `since` and
`until` select calls by when they finished.

`run_cost` totals one run's tree: its own calls plus every descendant's (delegated agents, child
workflows, at any depth), each exactly once, split by run, agent and model.

How it stays fast on a large journal: the database decodes each model call's model and tokens
(generated columns `call_model`, `call_input_tokens`, `call_output_tokens` of `steps`, migration
0005), and whole days and hours are read from the roll-up (`corral.observe.cost_days`), so a
report is one aggregate statement over a few thousand summed rows and the calls of the current
hour and of the hours the window cuts. It returns one row per key, model and *price band*,
which are priced here. Pricing a sum of calls equals summing the prices of the calls because,
within one band, a price is linear in tokens (and in calls, for a per-request fee): the bands are
cut at every token threshold `genai-prices` knows (a "price above 200k input tokens" tier applies
to a whole call). A model whose price changed inside the reported period (a new price from a
date, or an off-peak price by time of day) is priced call by call instead.
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from typing import Any

import genai_prices
from genai_prices.types import ModelInfo, ModelPrice, Provider, StartDateConstraint

from corral.errors import UsageError
from corral.models.messages import Usage
from corral.models.prices import FREE_PROVIDERS, cost_usd
from corral.observe.cost_days import (
    COST_DIMENSIONS,
    DIMENSION_KEYS,
    HOUR_SECONDS,
    HOURS_PER_DAY,
    CostDimension,
    band_sql,
    calls_between,
    consecutive_spans,
    hour_of,
    roll_up,
    stale_hours,
)
from corral.observe.search import catch_up
from corral.store import Store
from corral.store.scripts import Dialect, Script, Statement

MODEL_STEP_PREFIX = "model:"


@dataclass(frozen=True, slots=True)
class CostRow:
    """The model calls of one key (an agent, a workflow, a tenant, a user, a model or a run)."""

    key: str | None
    """What the calls are grouped under; None for calls of runs nobody was recorded starting
    (`by="user"`)."""
    runs: int
    """Runs whose first call under this key is among the calls (root runs for workflow, tenant
    and user; see the module's docstring)."""
    model_calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float
    """What the priced calls cost, in USD."""
    unpriced_calls: int
    """Calls on a model without a known price: in the tokens, not in `cost_usd`."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class RunCost:
    """What a run's tree of runs cost: the run's own model calls and its descendants'."""

    run_id: str
    own: CostRow
    """The run's own calls (`key` is the run id; `runs` is 1)."""
    total: CostRow
    """Its own calls and every descendant's, each once (`runs`: the runs in the tree)."""
    by_run: list[CostRow] = field(default_factory=list)
    """Each run of the tree (parents before children), with its own calls only."""
    by_agent: list[CostRow] = field(default_factory=list)
    """`total` split by the agent that made each call."""
    by_model: list[CostRow] = field(default_factory=list)
    """`total` split by the model that answered each call."""


async def cost_report(
    store: Store,
    *,
    by: CostDimension,
    since: float | None = None,
    until: float | None = None,
    tenant: str | None = None,
    index_first: bool = True,
) -> list[CostRow]:
    """What model calls cost, grouped by `by` (see the module's table), most expensive first.

    Args:
        store: The store holding the journal.
        by: `agent`, `workflow`, `tenant`, `user` or `model`.
        since: Only calls that finished at or after this time (seconds since the epoch).
        until: Only calls that finished before this time.
        tenant: Only calls of this tenant's runs; None: every tenant.
        index_first: Bring the roll-up up to date first (`corral.observe.cost_days`);
            without it the report is as exact, and slower when many days are out of date.

    Raises:
        UsageError: `by` is not one of `COST_DIMENSIONS`.
    """
    if by not in COST_DIMENSIONS:
        raise UsageError(f"cost report by {by!r}: choose one of {', '.join(COST_DIMENSIONS)}")
    now = time.time()
    if index_first:
        await catch_up(store)
        await roll_up(store, now=now)
    return await store.read_script(
        lambda dialect: _report(
            by=by, since=since, until=until, tenant=tenant, now=now, dialect=dialect
        )
    )


async def run_cost(store: Store, run_id: str) -> RunCost | None:
    """What run `run_id` cost with all its descendants; None if there is no such run."""
    return await store.read_script(lambda dialect: _run_tree_cost(run_id))


def total_of(rows: Iterable[CostRow], *, key: str | None = None) -> CostRow:
    """The sum of `rows` (their `runs` too: exact only when no run is in two rows)."""
    listed = list(rows)
    return CostRow(
        key=key,
        runs=sum(r.runs for r in listed),
        model_calls=sum(r.model_calls for r in listed),
        input_tokens=sum(r.input_tokens for r in listed),
        output_tokens=sum(r.output_tokens for r in listed),
        cost_usd=sum((r.cost_usd for r in listed), 0.0),
        unpriced_calls=sum(r.unpriced_calls for r in listed),
    )


# -- the report --------------------------------------------------------------------------------


def _report(
    *,
    by: CostDimension,
    since: float | None,
    until: float | None,
    tenant: str | None,
    now: float,
    dialect: Dialect,
) -> Script[list[CostRow]]:
    if dialect == "postgresql":
        # For this read transaction only: aggregate in memory (hash, not an on-disk sort) and
        # skip JIT compilation, which costs more than it saves on a query of this size.
        yield Statement("SET LOCAL work_mem = '64MB'")
        yield Statement("SET LOCAL jit = off")
    start = since if since is not None else 0.0
    key, first = DIMENSION_KEYS[by]
    plan = yield from _plan(start, until, now=now)
    parts: list[str] = []
    params: list[Any] = []
    only_tenant = " AND tenant = ?" if tenant is not None else ""
    tenant_param = [tenant] if tenant is not None else []
    columns = "model, band, calls, input_tokens, output_tokens, first_at, last_at"
    if plan.days:
        parts.append(
            f"SELECT k, {columns}, runs AS firsts FROM cost_day_keys WHERE dimension = ?"
            f" AND ({_ranges('day', plan.days)}){only_tenant}"
        )
        params += [by, *(bound for span in plan.days for bound in span), *tenant_param]
    if plan.hours:
        parts.append(
            f"SELECT {key} AS k, {columns}, {first}_runs AS firsts FROM cost_hours"
            f" WHERE ({_ranges('hour', plan.hours)}){only_tenant}"
        )
        params += [*(bound for span in plan.hours for bound in span), *tenant_param]
    for begin, finish in plan.journal:
        calls, more = calls_between(begin, finish, tenant=tenant, firsts=(first,))
        parts.append(
            f"SELECT {key} AS k, model, band, 1 AS calls, input_tokens, output_tokens,"
            " finished_at AS first_at, finished_at AS last_at,"
            f" {first}_first AS firsts FROM ({calls}) c"
        )
        params += more
    union = " UNION ALL ".join(parts)
    result = yield Statement(
        "SELECT k, model, band, sum(calls), sum(input_tokens), sum(output_tokens),"
        f" min(first_at), max(last_at), sum(firsts) FROM ({union}) u GROUP BY k, model, band",
        params,
    )
    runs: dict[Any, int] = {}
    for row in result.rows:
        runs[row[0]] = runs.get(row[0], 0) + int(row[8] or 0)
    groups = [_Group((row[0],), *row[1:8]) for row in result.rows]
    priced, per_call_models = _price_groups(groups)
    if per_call_models:
        marks = ", ".join("?" for _ in per_call_models)
        calls, more = calls_between(start, until, tenant=tenant, firsts=())
        found = yield Statement(
            f"SELECT {key}, model, coalesce(input_tokens, 0), coalesce(output_tokens, 0),"
            f" finished_at FROM ({calls}) c WHERE model IN ({marks})",
            (*more, *per_call_models),
        )
        priced += _price_calls(((row[0],), *row[1:]) for row in found.rows)
    rows = [
        _row(_key_name(by, raw), runs.get(raw, 0), cells)
        for raw, cells in _by_position(priced, 0).items()
    ]
    return _ordered(rows)


@dataclass(frozen=True, slots=True)
class _Plan:
    """Where a report reads each part of its window from."""

    days: list[tuple[int, int]]
    """[first, last) runs of whole days read from `cost_days`."""
    hours: list[tuple[int, int]]
    """[first, last) runs of whole hours read from `cost_hours`."""
    journal: list[tuple[float, float | None]]
    """[start, end) spans of time read from the journal (None: no end)."""


def _plan(start: float, until: float | None, *, now: float) -> Script[_Plan]:
    """Split [start, until) between day rows, hour rows and the journal.

    Whole hours inside the window and before the current hour are rolled up unless out of date
    (`stale_hours`); a whole day of such hours is read from its day row, the others from their
    hour rows. The rest (the parts of hours the window cuts, the current hour and later, the
    out-of-date hours) is read from the journal.
    """
    first_hour = math.ceil(start / HOUR_SECONDS)
    end_hour = hour_of(now)
    if until is not None:
        end_hour = min(end_hour, math.floor(until / HOUR_SECONDS))
    if first_hour >= end_hour:
        return _Plan([], [], [(start, until)])
    stale = yield from stale_hours(first_hour, end_hour)
    # Whole days: [first_day, end_day), less the days with an out-of-date hour, whose other
    # hours are read from their hour rows, as are the hours before and after the whole days.
    first_day = math.ceil(first_hour / HOURS_PER_DAY)
    end_day = max(first_day, end_hour // HOURS_PER_DAY)
    broken = sorted({d for d in (h // HOURS_PER_DAY for h in stale) if first_day <= d < end_day})
    days: list[tuple[int, int]] = []
    begin = first_day
    for day in [*broken, end_day]:
        if begin < day:
            days.append((begin, day))
        begin = day + 1
    candidates = [
        *range(first_hour, min(end_hour, first_day * HOURS_PER_DAY)),
        *(h for day in broken for h in range(day * HOURS_PER_DAY, (day + 1) * HOURS_PER_DAY)),
        *range(max(first_hour, end_day * HOURS_PER_DAY), end_hour),
    ]
    hours = consecutive_spans(sorted({h for h in candidates if h not in stale}))
    journal: list[tuple[float, float | None]] = [(start, float(first_hour * HOUR_SECONDS))]
    journal += [(float(h * HOUR_SECONDS), float((h + 1) * HOUR_SECONDS)) for h in sorted(stale)]
    journal.append((float(end_hour * HOUR_SECONDS), until))
    return _Plan(days, hours, _merged(journal))


def _ranges(unit: str, spans: list[tuple[int, int]]) -> str:
    """SQL matching `unit` (a column) in any of `spans` ([first, last) each, as parameters)."""
    return " OR ".join(f"({unit} >= ? AND {unit} < ?)" for _ in spans)


def _merged(spans: list[tuple[float, float | None]]) -> list[tuple[float, float | None]]:
    """`spans` (in order, None: no end) without empty ones, touching ones joined."""
    merged: list[tuple[float, float | None]] = []
    for begin, finish in spans:
        if finish is not None and finish <= begin:
            continue
        if merged and merged[-1][1] is not None and merged[-1][1] >= begin:
            merged[-1] = (merged[-1][0], finish)
        else:
            merged.append((begin, finish))
    return merged


def _key_name(by: CostDimension, raw: Any) -> str | None:
    if raw is None:
        return None
    text = str(raw)
    if by == "agent" and text.startswith(MODEL_STEP_PREFIX):
        return text[len(MODEL_STEP_PREFIX) :]
    return text


# -- one run's tree ----------------------------------------------------------------------------

_TREE = (
    "WITH RECURSIVE tree (run_id) AS (SELECT run_id FROM runs WHERE run_id = ?"
    " UNION ALL SELECT runs.run_id FROM runs JOIN tree ON runs.parent_run_id = tree.run_id)"
)


def _run_tree_cost(run_id: str) -> Script[RunCost | None]:
    tree = yield Statement(
        f"{_TREE} SELECT runs.run_id, runs.parent_run_id, runs.created_at"
        " FROM runs JOIN tree ON tree.run_id = runs.run_id",
        (run_id,),
    )
    if not tree.rows:
        return None
    source = "FROM tree JOIN steps s ON s.run_id = tree.run_id WHERE s.call_model IS NOT NULL"
    result = yield Statement(
        f"{_TREE} SELECT s.run_id, s.name, s.call_model, {band_sql()}, count(*),"
        " sum(s.call_input_tokens), sum(s.call_output_tokens),"
        f" min(s.finished_at), max(s.finished_at) {source} GROUP BY 1, 2, 3, 4",
        (run_id,),
    )
    groups = [_Group((row[0], row[1]), *row[2:]) for row in result.rows]
    priced, per_call_models = _price_groups(groups)
    if per_call_models:
        marks = ", ".join("?" for _ in per_call_models)
        calls = yield Statement(
            f"{_TREE} SELECT s.run_id, s.name, s.call_model, coalesce(s.call_input_tokens, 0),"
            f" coalesce(s.call_output_tokens, 0), s.finished_at {source}"
            f" AND s.call_model IN ({marks})",
            (run_id, *per_call_models),
        )
        priced += _price_calls(((row[0], row[1]), *row[2:]) for row in calls.rows)
    order = _tree_order(run_id, [(str(r[0]), r[1], float(r[2])) for r in tree.rows])
    per_run = _by_position(priced, 0)
    by_run = [_row(run, 1, per_run.get(run, [])) for run in order]
    agents = _by_position(priced, 1)
    runs_of_agent = {agent: len({cell.key[0] for cell in cells}) for agent, cells in agents.items()}
    by_agent = [
        _row(_key_name("agent", agent), runs_of_agent[agent], cells)
        for agent, cells in agents.items()
    ]
    by_model = [
        _row(model, len({cell.key[0] for cell in cells}), cells)
        for model, cells in _by_model(priced).items()
    ]
    return RunCost(
        run_id=run_id,
        own=by_run[0],
        total=_row(run_id, len(order), priced),
        by_run=by_run,
        by_agent=_ordered(by_agent),
        by_model=_ordered(by_model),
    )


def _tree_order(root: str, runs: list[tuple[str, Any, float]]) -> list[str]:
    """The tree's run ids, depth first from `root`, children in the order they were created."""
    children: dict[str, list[tuple[float, str]]] = {}
    for run, parent, created_at in runs:
        if parent is not None:
            children.setdefault(str(parent), []).append((created_at, run))
    order: list[str] = []
    pending = [root]
    while pending:
        run = pending.pop()
        order.append(run)
        pending.extend(run for _, run in sorted(children.get(run, []), reverse=True))
    return order


# -- pricing -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Group:
    """Model calls of one key on one model in one price band, as the database summed them."""

    key: tuple[Any, ...]
    model: str
    band: int
    calls: int
    input_tokens: int | None
    """None: no call of the group reported its tokens."""
    output_tokens: int | None
    first_at: float
    last_at: float


@dataclass(frozen=True, slots=True)
class _Priced:
    """Model calls of one key on one model, with what they cost (None: price unknown)."""

    key: tuple[Any, ...]
    model: str
    calls: int
    input_tokens: int
    output_tokens: int
    cost_usd: float | None


@dataclass(frozen=True, slots=True)
class _ModelPricing:
    """How one model string is priced: free, unknown (no entry), or by this entry."""

    free: bool
    info: ModelInfo | None = None
    provider: Provider | None = None


def _price_groups(groups: Sequence[_Group]) -> tuple[list[_Priced], list[str]]:
    """Price each group as a whole; the models whose groups must be priced call by call."""
    priced: list[_Priced] = []
    per_call: set[str] = set()
    for group in groups:
        model = str(group.model)
        pricing = _pricing(model)
        if pricing.free or pricing.info is None or pricing.provider is None:
            cost = 0.0 if pricing.free else None
        elif not _steady(pricing.info, group.first_at, group.last_at):
            per_call.add(model)
            continue
        else:
            cost = _group_cost(pricing.info, pricing.provider, group)
        priced.append(
            _Priced(
                group.key,
                model,
                int(group.calls),
                int(group.input_tokens or 0),
                int(group.output_tokens or 0),
                cost,
            )
        )
    return priced, sorted(per_call)


def _price_calls(rows: Iterable[tuple[Any, ...]]) -> list[_Priced]:
    """Price calls one by one, exactly as `StepView.cost_usd` does: (key, model, in, out, at)."""
    priced: list[_Priced] = []
    for key, model, input_tokens, output_tokens, at in rows:
        usage = Usage(input_tokens=int(input_tokens), output_tokens=int(output_tokens))
        priced.append(
            _Priced(
                key,
                str(model),
                1,
                usage.input_tokens,
                usage.output_tokens,
                cost_usd(str(model), usage, at=at),
            )
        )
    return priced


def _group_cost(info: ModelInfo, provider: Provider, group: _Group) -> float:
    """What the group's calls cost: `calls` times the price of their mean usage.

    Exact because every call of the group is in one price band (the same tier for each of the
    model's prices) and in one price period (`_steady`), where a price is linear in tokens; a
    per-request fee is counted once per call.
    """
    calls = Decimal(int(group.calls))
    usage = genai_prices.Usage(
        input_tokens=Decimal(int(group.input_tokens or 0)) / calls,
        output_tokens=Decimal(int(group.output_tokens or 0)) / calls,
    )
    at = dt.datetime.fromtimestamp(float(group.first_at), tz=dt.UTC)
    calculation = info.calc_price(usage, provider, genai_request_timestamp=at)
    return float(calculation.total_price * calls)


@cache
def _pricing(model: str) -> _ModelPricing:
    """How `model` (`provider:name`) is priced, as `corral.models.prices.cost_usd` finds it."""
    provider, separator, name = model.partition(":")
    if not separator:
        provider, name = "", model
    if provider in FREE_PROVIDERS:
        return _ModelPricing(free=True)
    if not name:
        return _ModelPricing(free=False)
    probe = genai_prices.Usage(input_tokens=1, output_tokens=1)
    try:
        found = genai_prices.calc_price(probe, name, provider_id=provider or None)
    except LookupError:
        return _ModelPricing(free=False)
    return _ModelPricing(free=False, info=found.model, provider=found.provider)


def _steady(info: ModelInfo, first_at: float, last_at: float) -> bool:
    """Whether `info` charges one price from `first_at` to `last_at`: no new price starting
    between them, and no price by time of day."""
    prices = info.prices
    if isinstance(prices, ModelPrice):
        return True
    first = dt.datetime.fromtimestamp(float(first_at), tz=dt.UTC)
    last = dt.datetime.fromtimestamp(float(last_at), tz=dt.UTC)
    for conditional in prices:
        constraint = conditional.constraint
        if constraint is None:
            continue
        if not isinstance(constraint, StartDateConstraint):
            return False
        if constraint.active(first) != constraint.active(last):
            return False
    return True


# -- rows --------------------------------------------------------------------------------------


def _by_position(priced: Iterable[_Priced], position: int) -> dict[Any, list[_Priced]]:
    grouped: dict[Any, list[_Priced]] = {}
    for cell in priced:
        grouped.setdefault(cell.key[position], []).append(cell)
    return grouped


def _by_model(priced: Iterable[_Priced]) -> dict[str, list[_Priced]]:
    grouped: dict[str, list[_Priced]] = {}
    for cell in priced:
        grouped.setdefault(cell.model, []).append(cell)
    return grouped


def _row(key: str | None, runs: int, cells: Sequence[_Priced]) -> CostRow:
    return CostRow(
        key=key,
        runs=runs,
        model_calls=sum(c.calls for c in cells),
        input_tokens=sum(c.input_tokens for c in cells),
        output_tokens=sum(c.output_tokens for c in cells),
        cost_usd=sum((c.cost_usd for c in cells if c.cost_usd is not None), 0.0),
        unpriced_calls=sum(c.calls for c in cells if c.cost_usd is None),
    )


def _ordered(rows: list[CostRow]) -> list[CostRow]:
    """Most expensive first, then most calls, then by key (None last)."""
    return sorted(rows, key=lambda r: (-r.cost_usd, -r.model_calls, r.key is None, r.key or ""))


__all__ = [
    "COST_DIMENSIONS",
    "CostDimension",
    "CostRow",
    "RunCost",
    "cost_report",
    "run_cost",
    "total_of",
]
