"""What the dashboard shows of a tenant: runs by status, approvals waiting, the cost of the last
seven days, breakers that are open, and the latest runs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from corral.governance.approvals import ApprovalRequest, list_approvals
from corral.observe.cost_days import DAY_SECONDS, day_of
from corral.observe.costs import cost_report, total_of
from corral.reliability.breaker_store import BreakerRow, list_breakers
from corral.server.routes.runs import runs_of
from corral.store import RUN_STATUSES, RunRecord, Store
from corral.store.scripts import Script, Statement

COST_DAYS = 7
NEWEST_APPROVALS = 5
RECENT_RUNS = 8


@dataclass(frozen=True, slots=True)
class CostDay:
    """One UTC day of the tenant's model spend."""

    day: dt.date
    cost_usd: float
    model_calls: int
    tokens: int
    unpriced_calls: int
    height: float = 0.0
    """The bar's height, as a share (0 to 1) of the highest day's (by cost, else by calls)."""


@dataclass(frozen=True, slots=True)
class Dashboard:
    counts: dict[str, int]
    """Runs of the tenant by status, every status listed (in `RUN_STATUSES` order)."""
    pending_approvals: int
    newest_approvals: list[ApprovalRequest]
    cost_days: list[CostDay]
    open_breakers: list[BreakerRow]
    recent_runs: list[RunRecord]

    @property
    def total_runs(self) -> int:
        return sum(self.counts.values())

    @property
    def week_cost(self) -> float:
        return sum(day.cost_usd for day in self.cost_days)

    @property
    def week_calls(self) -> int:
        return sum(day.model_calls for day in self.cost_days)


def tenant_counts(tenant: str) -> Script[tuple[dict[str, int], int]]:
    """The tenant's runs by status and its pending approvals, counted (a read script)."""
    runs = yield Statement(
        "SELECT status, count(*) FROM runs WHERE tenant = ? GROUP BY status", (tenant,)
    )
    pending = yield Statement(
        "SELECT count(*) FROM approvals WHERE tenant = ? AND status = 'pending'", (tenant,)
    )
    found = {str(status): int(count) for status, count in runs.rows}
    return {status: found.get(status, 0) for status in RUN_STATUSES}, int(pending.scalar() or 0)


async def cost_by_day(store: Store, tenant: str, *, now: float) -> list[CostDay]:
    """The tenant's model spend on each of the last `COST_DAYS` UTC days, oldest first."""
    today = day_of(now)
    days: list[CostDay] = []
    for back in range(COST_DAYS - 1, -1, -1):
        start = float((today - back) * DAY_SECONDS)
        rows = await cost_report(
            store,
            by="tenant",
            since=start,
            until=start + DAY_SECONDS,
            tenant=tenant,
            index_first=back == COST_DAYS - 1,  # bring the roll-up up to date once
        )
        total = total_of(rows)
        days.append(
            CostDay(
                day=dt.datetime.fromtimestamp(start, tz=dt.UTC).date(),
                cost_usd=total.cost_usd,
                model_calls=total.model_calls,
                tokens=total.total_tokens,
                unpriced_calls=total.unpriced_calls,
            )
        )
    top_cost = max((d.cost_usd for d in days), default=0.0)
    top_calls = max((d.model_calls for d in days), default=0)
    return [
        CostDay(
            day=d.day,
            cost_usd=d.cost_usd,
            model_calls=d.model_calls,
            tokens=d.tokens,
            unpriced_calls=d.unpriced_calls,
            height=(d.cost_usd / top_cost)
            if top_cost > 0
            else (d.model_calls / top_calls if top_calls else 0.0),
        )
        for d in days
    ]


async def load_dashboard(store: Store, tenant: str, *, now: float) -> Dashboard:
    counts, pending = await store.read_script(lambda d: tenant_counts(tenant))
    newest = await store.read_script(lambda d: list_approvals(tenant, "pending", NEWEST_APPROVALS))
    breakers = await store.read_script(lambda d: list_breakers())
    recent = await store.read_script(lambda d: runs_of(tenant, top_level=True, limit=RECENT_RUNS))
    return Dashboard(
        counts=counts,
        pending_approvals=pending,
        newest_approvals=newest,
        cost_days=await cost_by_day(store, tenant, now=now),
        # Breakers belong to workers, not tenants: every tenant's work goes through them.
        open_breakers=[b for b in breakers if b.state != "closed"],
        recent_runs=recent,
    )


__all__ = ["CostDay", "Dashboard", "cost_by_day", "load_dashboard", "tenant_counts"]
