"""Budgets: tokens, USD and tool calls, reserved before a call and settled after.

Counters live in the store (`budget_counters`), one per tenant, scope, period and metric:

- scope `run:<run_id>` (period `run`), `agent:<name>` and `tenant` (period: the UTC day,
  `2026-11-21`);
- metric `tokens`, `usd` or `tool_calls`;
- `used` (settled) and `reserved` (in flight).

Before a call, the tool loop `reserve`s its estimate against every counter it touches, checked
against the limits that apply, atomically: the counters are locked (PostgreSQL: `FOR UPDATE`, in
one fixed order so two reservations never deadlock; SQLite: its single writer), so of many
concurrent calls only those that fit are granted and a budget is never overspent. A refusal
reserves nothing and is audited (`budget.exceeded`) in the same transaction; crossing a soft
limit is audited as `budget.soft_limit`. After the call, `settle` replaces the estimate with what
the call actually used (or `release` drops it if the call never happened).

Reservations are keyed by the step that makes them (`reservation_id`): a run resumed after a
crash that reserves again gets its original grant back without counting twice, and settling twice
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from corral.errors import BudgetExceeded as BudgetExceeded
from corral.errors import UsageError
from corral.governance.audit import AuditEntry, append
from corral.governance.documents import BudgetLimit, BudgetScope
from corral.store.scripts import Dialect, Script, Statement

Amount = tuple[str, str, str, float]
"""(scope key, period, metric, amount): `("run:3f1c…", "run", "tool_calls", 1.0)`."""

Limit = tuple[str, str, str, float, float | None, str]
"""(scope key, period, metric, limit, soft limit or None, budget name)."""

METRICS = ("usd", "tokens", "tool_calls")
RUN_PERIOD = "run"
TENANT_SCOPE = "tenant"

_EPSILON = 1e-9
"""Float noise below which a reserved amount is zero (USD sums of many small prices)."""


def budget_exceeded(breach: BudgetBreach) -> BudgetExceeded:
    """The error for a refused reservation: which budget, and by how much."""
    return BudgetExceeded(
        f"budget {breach.budget!r} exceeded: {breach.metric} of {breach.scope} would reach "
        f"{breach.used + breach.amount:g} (limit {breach.limit:g}, used {breach.used:g})",
        budget=breach.budget,
        scope=breach.scope,
        metric=breach.metric,
        limit=breach.limit,
        used=breach.used,
    )


class BudgetBreach(BaseModel):
    """A limit a reservation would have exceeded (`used` includes what is reserved)."""

    model_config = ConfigDict(frozen=True)

    budget: str
    scope: str
    period: str
    metric: str
    limit: float
    used: float
    amount: float
    """What the refused reservation asked for on this counter."""


class SoftLimitCrossed(BaseModel):
    """A soft limit a granted reservation went over (an alert, not a refusal)."""

    model_config = ConfigDict(frozen=True)

    budget: str
    scope: str
    period: str
    metric: str
    soft_limit: float
    limit: float
    used: float
    """Used and reserved after the reservation."""


class ReserveOutcome(BaseModel):
    """Whether a reservation was granted; if not, the limits it would have exceeded."""

    model_config = ConfigDict(frozen=True)

    granted: bool
    exceeded: list[BudgetBreach] = []
    soft_crossed: list[SoftLimitCrossed] = []


# -- keys --------------------------------------------------------------------------------------


def period_for(scope: str, now: float) -> str:
    """The counting period of a scope (`run`, `agent`, `tenant`, or a scope key such as
    `run:<id>`): `run` for a run, else the UTC day of `now` (`2026-11-21`)."""
    if scope == "run" or scope.startswith("run:"):
        return RUN_PERIOD
    return dt.datetime.fromtimestamp(now, tz=dt.UTC).strftime("%Y-%m-%d")


def scope_key(scope: BudgetScope, *, run_id: str, agent: str | None) -> str | None:
    """The counter scope of a budget's `scope` for a call: `run:<id>`, `agent:<name>`,
    `tenant`; None for an agent budget when no agent is calling."""
    if scope == "run":
        return f"run:{run_id}"
    if scope == "agent":
        return None if agent is None else f"agent:{agent}"
    return TENANT_SCOPE


def call_amounts(
    *,
    run_id: str,
    agent: str | None,
    now: float,
    tokens: float = 0.0,
    usd: float = 0.0,
    tool_calls: float = 0.0,
) -> list[Amount]:
    """What one call counts against every scope it belongs to (zero amounts left out)."""
    scopes: list[BudgetScope] = ["run", "agent", "tenant"]
    amounts: list[Amount] = []
    for scope in scopes:
        key = scope_key(scope, run_id=run_id, agent=agent)
        if key is None:
            continue
        period = period_for(scope, now)
        for metric, amount in (("tokens", tokens), ("usd", usd), ("tool_calls", tool_calls)):
            if amount:
                amounts.append((key, period, metric, float(amount)))
    return amounts


def limits_for(
    budgets: Iterable[BudgetLimit], *, run_id: str, agent: str | None, now: float
) -> list[Limit]:
    """The limits of policy budgets (already matched to this call) as counters to check."""
    limits: list[Limit] = []
    for budget in budgets:
        key = scope_key(budget.scope, run_id=run_id, agent=agent)
        if key is None:
            continue
        limits.append(
            (
                key,
                period_for(budget.scope, now),
                budget.metric,
                budget.limit,
                budget.soft_limit,
                budget.name,
            )
        )
    return limits


# -- counters ----------------------------------------------------------------------------------

_Key = tuple[str, str, str]


def _lock_counters(
    tenant: str, keys: Iterable[_Key], dialect: Dialect
) -> Script[dict[_Key, list[float]]]:
    """Create missing counters and lock them, in sorted order; return {key: [used, reserved]}."""
    ordered = sorted(set(keys))
    if not ordered:
        return {}
    yield Statement(
        "INSERT INTO budget_counters (tenant, scope, period, metric, used, reserved)"
        " VALUES (?, ?, ?, ?, 0, 0) ON CONFLICT (tenant, scope, period, metric) DO NOTHING",
        [(tenant, *key) for key in ordered],
        many=True,
    )
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    values: dict[_Key, list[float]] = {}
    for key in ordered:
        # One row at a time, in order: every script locks counters in the same sequence.
        result = yield Statement(
            "SELECT used, reserved FROM budget_counters"
            f" WHERE tenant = ? AND scope = ? AND period = ? AND metric = ?{lock}",
            (tenant, *key),
        )
        row = result.one()
        assert row is not None
        values[key] = [float(row[0]), float(row[1])]
    return values


def _write_counters(
    tenant: str, before: dict[_Key, list[float]], after: dict[_Key, list[float]]
) -> Script[None]:
    changed = [
        (_clean(used), _clean(reserved), tenant, *key)
        for key, (used, reserved) in sorted(after.items())
        if before.get(key) != [used, reserved]
    ]
    if changed:
        yield Statement(
            "UPDATE budget_counters SET used = ?, reserved = ?"
            " WHERE tenant = ? AND scope = ? AND period = ? AND metric = ?",
            changed,
            many=True,
        )


def _clean(value: float) -> float:
    return 0.0 if abs(value) < _EPSILON else value


def _sum(amounts: Iterable[Amount]) -> dict[_Key, float]:
    totals: dict[_Key, float] = {}
    for scope, period, metric, amount in amounts:
        if metric not in METRICS:
            raise UsageError(
                f"unknown budget metric {metric!r}: metrics are {', '.join(METRICS)}",
                metric=metric,
            )
        if amount < 0:
            raise UsageError(
                f"a budget amount cannot be negative ({metric} {amount} for {scope})",
                scope=scope,
                metric=metric,
            )
        key = (scope, period, metric)
        totals[key] = totals.get(key, 0.0) + float(amount)
    return totals


def _reservation(
    reservation_id: str, dialect: Dialect
) -> Script[tuple[str, str, list[Amount]] | None]:
    """(tenant, status, amounts) of a reservation, locked on PostgreSQL; None if there is none."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    result = yield Statement(
        f"SELECT tenant, status, counters FROM budget_reservations WHERE reservation_id = ?{lock}",
        (reservation_id,),
    )
    row = result.one()
    if row is None:
        return None
    amounts = [(str(s), str(p), str(m), float(a)) for s, p, m, a in json.loads(row[2])]
    return str(row[0]), str(row[1]), amounts


# -- scripts -----------------------------------------------------------------------------------


def reserve(
    *,
    tenant: str,
    reservation_id: str,
    amounts: Sequence[Amount],
    limits: Sequence[Limit],
    now: float,
    dialect: Dialect,
) -> Script[ReserveOutcome]:
    """Reserve `amounts` if no limit would be exceeded; otherwise reserve nothing.

    A limit is exceeded when its counter's used + reserved + the amount asked would go over it
    (so a limit of 10 tool calls allows 10). A refusal is audited (`budget.exceeded`) and
    returned, not raised: the caller decides (stop, degrade, ask a human). A reservation id
    already granted returns its grant again and changes nothing.
    """
    existing = yield from _reservation(reservation_id, dialect)
    if existing is not None:
        return (yield from _granted_again(tenant, reservation_id))
    wanted = _sum(amounts)
    limit_keys = [(scope, period, metric) for scope, period, metric, *_ in limits]
    counters = yield from _lock_counters(tenant, [*wanted, *limit_keys], dialect)
    # Again under the counters' locks: the same reservation made concurrently has committed.
    existing = yield from _reservation(reservation_id, dialect)
    if existing is not None:
        return (yield from _granted_again(tenant, reservation_id))

    exceeded: list[BudgetBreach] = []
    crossed: list[SoftLimitCrossed] = []
    for scope, period, metric, limit, soft_limit, name in limits:
        key = (scope, period, metric)
        used, reserved = counters[key]
        current = used + reserved
        amount = wanted.get(key, 0.0)
        after = current + amount
        if after > limit + _EPSILON:
            exceeded.append(
                BudgetBreach(
                    budget=name,
                    scope=scope,
                    period=period,
                    metric=metric,
                    limit=limit,
                    used=current,
                    amount=amount,
                )
            )
        elif soft_limit is not None and current <= soft_limit + _EPSILON < after:
            crossed.append(
                SoftLimitCrossed(
                    budget=name,
                    scope=scope,
                    period=period,
                    metric=metric,
                    soft_limit=soft_limit,
                    limit=limit,
                    used=after,
                )
            )

    if exceeded:
        yield from append(
            tenant,
            AuditEntry(
                kind="budget.exceeded",
                actor="corral",
                subject=f"reservation:{reservation_id}",
                decision={
                    "exceeded": [breach.model_dump(mode="json") for breach in exceeded],
                    "amounts": [list(amount) for amount in amounts],
                },
                dedupe_key=f"budget.exceeded:{reservation_id}",
            ),
            at=now,
            dialect=dialect,
        )
        return ReserveOutcome(granted=False, exceeded=exceeded)

    after_reserve = {key: list(values) for key, values in counters.items()}
    for key, amount in wanted.items():
        after_reserve[key][1] += amount
    yield from _write_counters(tenant, counters, after_reserve)
    yield Statement(
        "INSERT INTO budget_reservations (reservation_id, tenant, counters, status, created_at)"
        " VALUES (?, ?, ?, 'reserved', ?)",
        (
            reservation_id,
            tenant,
            json.dumps([[*key, amount] for key, amount in sorted(wanted.items())]),
            now,
        ),
    )
    if crossed:
        yield from append(
            tenant,
            AuditEntry(
                kind="budget.soft_limit",
                actor="corral",
                subject=f"reservation:{reservation_id}",
                decision={"crossed": [soft.model_dump(mode="json") for soft in crossed]},
                dedupe_key=f"budget.soft_limit:{reservation_id}",
            ),
            at=now,
            dialect=dialect,
        )
    return ReserveOutcome(granted=True, soft_crossed=crossed)


def _granted_again(tenant: str, reservation_id: str) -> Script[ReserveOutcome]:
    """The outcome of a reservation granted before: its soft-limit alert, if it raised one."""
    result = yield Statement(
        "SELECT decision FROM audit_log WHERE tenant = ? AND dedupe_key = ?",
        (tenant, f"budget.soft_limit:{reservation_id}"),
    )
    row = result.one()
    crossed: list[Any] = [] if row is None else json.loads(row[0])["crossed"]
    return ReserveOutcome(
        granted=True, soft_crossed=[SoftLimitCrossed.model_validate(item) for item in crossed]
    )


def settle(
    *, reservation_id: str, actual: Sequence[Amount], now: float, dialect: Dialect
) -> Script[None]:
    """Replace a reservation's estimate with what the call used: reserved -= the reservation,
    used += `actual`. Settling (or releasing) twice changes nothing; an unknown reservation is
    an error."""
    yield from _finish(reservation_id, actual=actual, status="settled", now=now, dialect=dialect)


def release(reservation_id: str, now: float, *, dialect: Dialect) -> Script[None]:
    """Drop a reservation whose call never happened. Idempotent."""
    yield from _finish(reservation_id, actual=(), status="released", now=now, dialect=dialect)


def _finish(
    reservation_id: str,
    *,
    actual: Sequence[Amount],
    status: str,
    now: float,
    dialect: Dialect,
) -> Script[None]:
    found = yield from _reservation(reservation_id, dialect)
    if found is None:
        raise UsageError(
            f"no budget reservation {reservation_id!r} to {status[:-1]}",
            reservation_id=reservation_id,
        )
    tenant, current_status, reserved_amounts = found
    if current_status != "reserved":
        return
    held = _sum(reserved_amounts)
    used = _sum(actual)
    counters = yield from _lock_counters(tenant, [*held, *used], dialect)
    after = {key: list(values) for key, values in counters.items()}
    for key, amount in held.items():
        after[key][1] = max(after[key][1] - amount, 0.0)
    for key, amount in used.items():
        after[key][0] += amount
    yield from _write_counters(tenant, counters, after)
    yield Statement(
        "UPDATE budget_reservations SET status = ?, settled_at = ?"
        " WHERE reservation_id = ? AND status = 'reserved'",
        (status, now, reservation_id),
    )


def spent(*, tenant: str, run_id: str, agent: str | None, now: float) -> Script[dict[str, float]]:
    """Used + reserved so far, as policies' CEL conditions see it (`budget.run_usd`, …)."""
    day = period_for("tenant", now)
    wanted: dict[tuple[str, str], str] = {
        (f"run:{run_id}", RUN_PERIOD): "run",
        (TENANT_SCOPE, day): "tenant",
    }
    if agent is not None:
        wanted[(f"agent:{agent}", day)] = "agent"
    totals = {
        f"{prefix}_{metric}{'' if prefix == 'run' else '_today'}": 0.0
        for prefix in ("run", "agent", "tenant")
        for metric in METRICS
    }
    result = yield Statement(
        "SELECT scope, period, metric, used + reserved FROM budget_counters"
        " WHERE tenant = ? AND ((scope = ? AND period = ?) OR (scope = ? AND period = ?)"
        " OR (scope = ? AND period = ?))",
        (
            tenant,
            f"run:{run_id}",
            RUN_PERIOD,
            f"agent:{agent}" if agent is not None else "",
            day,
            TENANT_SCOPE,
            day,
        ),
    )
    for scope, period, metric, value in result.rows:
        prefix = wanted.get((scope, period))
        if prefix is None or metric not in METRICS:
            continue
        suffix = "" if prefix == "run" else "_today"
        totals[f"{prefix}_{metric}{suffix}"] = _clean(float(value))
    return totals
