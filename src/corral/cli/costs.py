"""`corral costs` and `corral runs cost`: what model calls cost, and who or what they count under.

Both are views of the journal (`corral.observe.costs`): every succeeded model step, priced with
`genai-prices` on the usage it journaled. A delegated agent's calls count once under its own
agent (`--by agent`) and once in the total of the run that was started (`--by workflow`, `user`,
`tenant`, and `corral runs cost`), never twice in one report.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal, TypeVar

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from corral.cli.display import console
from corral.cli.exits import reporting_errors
from corral.cli.reading import parse_duration
from corral.cli.remote import segment
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.errors import NotAuthorized, RunNotFound
from corral.governance.identity import authorize
from corral.observe.costs import CostRow, RunCost, cost_report, run_cost, total_of
from corral.store import Store
from corral.store.scripts import Dialect, Script

T = TypeVar("T")

By = Literal["agent", "workflow", "tenant", "user", "model"]

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

KEY_LABELS: dict[str, str] = {
    "agent": "agent",
    "workflow": "workflow (of the root run)",
    "tenant": "tenant",
    "user": "started by",
    "model": "model",
}

COSTS_EPILOG = """\
Examples:

  corral costs --by agent --since 7d

  corral costs --by workflow

  corral costs --by user --since 30d --json | jq '.rows[] | {user: .key, cost_usd}'

  corral costs --by tenant

Each model call counts once. --by agent: under the agent that made it. --by workflow, user and
tenant: under the run that was started (its root run): a delegated agent's calls count in the
total of the workflow or agent that delegated to it, and under the principal who started that
run (`corral --as ada run …`). --by model: under the model that answered. "unpriced" counts
calls on models whose price genai-prices does not know (their tokens are counted, not their
dollars). --since counts calls that finished within that window (s, m, h, d, w). Shows the
tenant of --tenant; --by tenant shows every tenant you may view. Needs the viewer role once a
tenant has principals.
"""

RUN_COST_EPILOG = """\
Examples:

  corral runs cost RUN_ID

  corral runs cost RUN_ID --json | jq .total.cost_usd

The total is the run's own model calls and those of every run it started (delegated agents,
child workflows, at any depth), each counted once; then the same total split by run, by agent and
by model.
"""


def costs_command(
    ctx: typer.Context,
    by: Annotated[
        By,
        typer.Option(
            "--by",
            "-b",
            help="Group model calls by the agent that made them, the workflow, tenant or user "
            "of the run that was started, or the model that answered.",
        ),
    ] = "agent",
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            help="Only calls that finished within this long ago: 90s, 30m, 12h, 7d, 2w. "
            "Default: every call in the journal.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """What model calls cost, by agent, workflow, tenant, user or model, with a total."""
    settings = Settings.of(ctx)
    with reporting_errors():
        start = None if since is None else time.time() - parse_duration(since)
    action = "see costs"

    async def read(store: Store) -> tuple[list[CostRow], int]:
        if by != "tenant":
            await _authorized(store, settings, settings.tenant, action)
            rows = await cost_report(store, by=by, since=start, tenant=settings.tenant)
            return rows, 0
        rows = await cost_report(store, by="tenant", since=start)
        shown: list[CostRow] = []
        for row in rows:
            try:
                await _authorized(store, settings, row.key or "", action)
            except NotAuthorized:
                continue
            shown.append(row)
        return shown, len(rows) - len(shown)

    if settings.server is not None:  # the key's tenant only: no tenant is hidden
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get("/costs", {"by": by, "since": since})
        rows, hidden = [_row_of(row) for row in answer["rows"]], 0
    else:
        rows, hidden = run_async(lambda: _reading(settings, read))
    # Every root run is under exactly one workflow, tenant or user; a run may hold calls of
    # several agents or models, so their `runs` do not add up.
    total = total_of(rows, key="total")
    runs_add_up = by in ("workflow", "tenant", "user")
    if json_output:
        typer.echo(
            dumps(
                {
                    "by": by,
                    "since": iso(start),
                    "tenant": None if by == "tenant" or settings.server else settings.tenant,
                    "rows": [_row_json(row) for row in rows],
                    "total": {**_row_json(total), "runs": total.runs if runs_add_up else None},
                    "hidden_tenants": hidden,
                }
            )
        )
        return
    if hidden:
        typer.echo(
            f"{hidden} tenant{'' if hidden == 1 else 's'} hidden (you lack the viewer role there)",
            err=True,
        )
    if not rows:
        window = f" in the last {since}" if since else ""
        typer.echo(f"no model calls{window}", err=True)
        return
    console().print(_costs_table(KEY_LABELS[by], rows, total, runs_add_up=runs_add_up))


def run_cost_command(
    ctx: typer.Context,
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)
    ],
    json_output: JsonOption = False,
) -> None:
    """What a run cost: its own model calls and every descendant run's, split by run, agent and
    model."""
    settings = Settings.of(ctx)

    async def read(store: Store) -> RunCost:
        await _authorized(store, settings, settings.tenant, "see costs")
        run = await store.get_run(run_id)
        # Another tenant's run is as unknown as a missing one.
        cost = (
            None if run is None or run.tenant != settings.tenant else await run_cost(store, run_id)
        )
        if cost is None:
            raise RunNotFound(f"no run {run_id!r} in tenant {settings.tenant!r}", run_id=run_id)
        return cost

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get(f"/runs/{segment(run_id)}/cost")
        cost = RunCost(
            run_id=answer["run_id"],
            total=_row_of(answer["total"]),
            own=_row_of(answer["own"]),
            by_run=[_row_of(row) for row in answer["by_run"]],
            by_agent=[_row_of(row) for row in answer["by_agent"]],
            by_model=[_row_of(row) for row in answer["by_model"]],
        )
    else:
        cost = run_async(lambda: _reading(settings, read))
    if json_output:
        typer.echo(
            dumps(
                {
                    "run_id": cost.run_id,
                    "total": _row_json(cost.total),
                    "own": _row_json(cost.own),
                    "by_run": [_row_json(row) for row in cost.by_run],
                    "by_agent": [_row_json(row) for row in cost.by_agent],
                    "by_model": [_row_json(row) for row in cost.by_model],
                }
            )
        )
        return
    out = console()
    total = cost.total
    unpriced = f" ({total.unpriced_calls} unpriced)" if total.unpriced_calls else ""
    out.print(
        Text(
            f"run {cost.run_id}: {money(total.cost_usd)} for {total.model_calls} model "
            f"call{'' if total.model_calls == 1 else 's'}{unpriced}, "
            f"{total.total_tokens:,} tokens, in {total.runs} run{'' if total.runs == 1 else 's'}",
            style="bold",
        )
    )
    if len(cost.by_run) > 1:
        out.print(_costs_table("run", cost.by_run, total, runs_add_up=True))
    if cost.by_agent:
        out.print(_costs_table("agent", cost.by_agent, total, runs_add_up=False))
    if cost.by_model:
        out.print(_costs_table("model", cost.by_model, total, runs_add_up=False))


def _row_of(answer: dict[str, Any]) -> CostRow:
    """A cost row of the API (remote mode) as `cost_report` returns it."""
    return CostRow(
        key=answer.get("key"),
        runs=answer.get("runs") or 0,
        model_calls=answer["model_calls"],
        input_tokens=answer["input_tokens"],
        output_tokens=answer["output_tokens"],
        cost_usd=answer["cost_usd"],
        unpriced_calls=answer["unpriced_calls"],
    )


def money(usd: float) -> str:
    """Dollars for people: cents for large sums, more digits for the fractions calls cost."""
    if usd >= 1:
        return f"${usd:,.2f}"
    if usd >= 0.01:
        return f"${usd:.4f}"
    return f"${usd:.6f}"


async def _reading(settings: Settings, read: Callable[[Store], Awaitable[T]]) -> T:
    """Open the database (it must exist), then `read(store)`."""
    store = settings.open_store(existing=True)
    await store.open()
    try:
        return await read(store)
    finally:
        await store.close()


async def _authorized(store: Store, settings: Settings, tenant: str, action: str) -> None:
    """Raise NotAuthorized unless the principal may view `tenant`."""

    def allowed(dialect: Dialect) -> Script[object]:
        return (yield from authorize(tenant, settings.principal, "viewer", action=action))

    await store.read_script(allowed)


def _row_json(row: CostRow) -> dict[str, Any]:
    return {
        "key": row.key,
        "runs": row.runs,
        "model_calls": row.model_calls,
        "input_tokens": row.input_tokens,
        "output_tokens": row.output_tokens,
        "total_tokens": row.total_tokens,
        "cost_usd": row.cost_usd,
        "unpriced_calls": row.unpriced_calls,
    }


def _costs_table(label: str, rows: list[CostRow], total: CostRow, *, runs_add_up: bool) -> Table:
    """One row per key and a total row; `runs` only where each row holds other runs."""
    per_run = label == "run"
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_footer=True)
    table.add_column(label, no_wrap=per_run, overflow="fold", footer="total")
    numbers: list[tuple[str, str]] = [
        ("model calls", f"{total.model_calls:,}"),
        ("input tokens", f"{total.input_tokens:,}"),
        ("output tokens", f"{total.output_tokens:,}"),
        ("cost (USD)", money(total.cost_usd)),
        ("unpriced calls", f"{total.unpriced_calls:,}" if total.unpriced_calls else ""),
    ]
    if not per_run:
        numbers.insert(0, ("runs", str(total.runs) if runs_add_up else "—"))
    for header, footer in numbers:
        table.add_column(header, justify="right", no_wrap=True, footer=footer)
    for row in rows:
        cells = [
            f"{row.model_calls:,}",
            f"{row.input_tokens:,}",
            f"{row.output_tokens:,}",
            money(row.cost_usd),
            f"{row.unpriced_calls:,}" if row.unpriced_calls else "",
        ]
        if not per_run:
            cells.insert(0, str(row.runs))
        table.add_row(Text(row.key if row.key is not None else "(not recorded)"), *cells)
    return table


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add `corral costs` to `app` and `corral runs cost` to `runs_app`."""
    app.command("costs", epilog=COSTS_EPILOG)(costs_command)
    runs_app.command("cost", epilog=RUN_COST_EPILOG)(run_cost_command)
