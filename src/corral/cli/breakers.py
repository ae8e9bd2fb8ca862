"""`corral breakers` and `corral breakers history`: the circuit breakers workers publish.

Breakers live in each worker process (`corral.reliability`); workers publish their state and
every change of it to the database. This shows each worker's view of each dependency, so an
operator can see which providers are being failed fast, since when, and why.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.table import Table
from rich.text import Text

from corral.cli.display import console, when
from corral.cli.exits import reporting_errors
from corral.cli.reading import reading
from corral.cli.remote import timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.reliability.breaker_store import (
    STALE_AFTER,
    BreakerRow,
    TransitionRow,
    list_breakers,
    list_transitions,
)
from corral.store import Store

T = TypeVar("T")

STATE_STYLES = {"closed": "green", "open": "bold red", "half_open": "yellow"}

breakers_app = typer.Typer(
    name="breakers",
    help="Circuit breakers of the workers: which dependencies are failed fast, since when, why.",
    invoke_without_command=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]

LIST_EPILOG = f"""\
Examples:

  corral breakers

  corral breakers --all --json

  corral breakers history --dependency openai:gpt-4o

One row per worker and dependency: each worker process keeps its own breakers. A breaker that is
**open** fails calls to its dependency at once until it tries again (half_open). Rows a worker
has not published for {STALE_AFTER / 60:g} minutes are hidden unless --all (the worker has likely
stopped). Needs the viewer role once the tenant has principals.
"""

HISTORY_EPILOG = """\
Examples:

  corral breakers history

  corral breakers history --dependency openai:gpt-4o --limit 10

  corral breakers history --json | jq '.transitions[] | select(.to_state == "open")'

Newest first: when each breaker changed state, on which worker, and why.
"""


@breakers_app.callback(epilog=LIST_EPILOG)
def breakers_command(
    ctx: typer.Context,
    show_all: Annotated[
        bool, typer.Option("--all", help="Include stale rows (workers that stopped publishing).")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show each worker's circuit breakers: dependency, state, since when, calls, failure rate."""
    if ctx.invoked_subcommand is not None:
        return
    settings = Settings.of(ctx)
    now = time.time()

    async def read(store: Store) -> list[BreakerRow]:
        return await store.read_script(lambda d: list_breakers())

    if settings.server is not None:  # the server filters stale rows by its own clock
        with reporting_errors(), settings.remote() as remote:
            answer = remote.get("/breakers", {"include_stale": show_all})
        rows = [_row_of(row) for row in answer["breakers"]]
        shown, hidden = rows, int(answer["stale_hidden"])
    else:
        rows = run_async(lambda: reading(settings, "see circuit breakers", read))
        shown = rows if show_all else [r for r in rows if not _stale(r, now)]
        hidden = len(rows) - len(shown)
    if json_output:
        typer.echo(
            dumps(
                {
                    "breakers": [_breaker_json(r, now) for r in shown],
                    "stale_hidden": hidden,
                }
            )
        )
        return
    if shown:
        console().print(_breakers_table(shown, now))
    else:
        typer.echo(
            "no circuit breakers published (workers publish them as runs call out)", err=True
        )
    if hidden:
        typer.echo(
            f"{hidden} stale row{'' if hidden == 1 else 's'} hidden (--all shows them)", err=True
        )


@breakers_app.command("history", epilog=HISTORY_EPILOG)
def history_command(
    ctx: typer.Context,
    dependency: Annotated[
        str | None,
        typer.Option(
            "--dependency",
            "-d",
            metavar="DEPENDENCY",
            help="Only this dependency's transitions.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many transitions.")
    ] = 50,
    json_output: JsonOption = False,
) -> None:
    """List the breakers' changes of state, newest first: when, dependency, worker, from and to,
    and why."""
    settings = Settings.of(ctx)

    async def read(store: Store) -> list[TransitionRow]:
        return await store.read_script(
            lambda d: list_transitions(dependency=dependency, limit=limit)
        )

    rows = run_async(lambda: reading(settings, "see circuit breakers", read))
    if json_output:
        typer.echo(dumps({"transitions": [_transition_json(r) for r in rows]}))
        return
    if not rows:
        what = f" of {dependency}" if dependency else ""
        typer.echo(f"no breaker transitions{what} recorded", err=True)
        return
    console().print(_transitions_table(rows))


def _row_of(answer: dict[str, Any]) -> BreakerRow:
    """A breaker of the API (remote mode) as `list_breakers` returns it."""
    return BreakerRow(
        worker=answer["worker"],
        dependency=answer["dependency"],
        state=answer["state"],
        since=timestamp(answer["since"]) or 0.0,
        calls=answer["calls"],
        failures=answer["failures"],
        opened_count=answer["opened_count"],
        updated_at=timestamp(answer["updated_at"]) or 0.0,
    )


def _stale(row: BreakerRow, now: float) -> bool:
    return now - row.updated_at > STALE_AFTER


def ago(seconds: float) -> str:
    """A duration in the past for people: `12s ago`, `5m ago`, `3h ago`, `2d ago`."""
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s ago"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m ago"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h ago"
    return f"{seconds // 86400:.0f}d ago"


def _breaker_json(row: BreakerRow, now: float) -> dict[str, Any]:
    return {
        "dependency": row.dependency,
        "worker": row.worker,
        "state": row.state,
        "since": iso(row.since),
        "calls": row.calls,
        "failures": row.failures,
        "failure_rate": round(row.failure_rate, 4),
        "opened_count": row.opened_count,
        "updated_at": iso(row.updated_at),
        "stale": _stale(row, now),
    }


def _transition_json(row: TransitionRow) -> dict[str, Any]:
    return {
        "transition_id": row.transition_id,
        "dependency": row.dependency,
        "worker": row.worker,
        "from_state": row.from_state,
        "to_state": row.to_state,
        "at": iso(row.at),
        "calls": row.calls,
        "failures": row.failures,
        "reason": row.reason,
    }


def _state(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def _breakers_table(rows: list[BreakerRow], now: float) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("dependency", overflow="fold")
    table.add_column("state", no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("since", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("failure rate", justify="right", no_wrap=True)
    for row in rows:
        since = ago(now - row.since)
        if _stale(row, now):
            since += f" (stale: last published {ago(now - row.updated_at)})"
        table.add_row(
            Text(row.dependency),
            _state(row.state),
            Text(row.worker),
            Text(since),
            Text(str(row.calls)),
            Text(f"{row.failure_rate:.0%}"),
        )
    return table


def _transitions_table(rows: list[TransitionRow]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("at", no_wrap=True)
    table.add_column("dependency", overflow="fold")
    table.add_column("worker", overflow="fold")
    table.add_column("change", no_wrap=True)
    table.add_column("calls", justify="right", no_wrap=True)
    table.add_column("failures", justify="right", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for row in rows:
        change = Text.assemble(_state(row.from_state), " → ", _state(row.to_state))
        table.add_row(
            Text(when(row.at)),
            Text(row.dependency),
            Text(row.worker),
            change,
            Text(str(row.calls)),
            Text(str(row.failures)),
            Text(row.reason),
        )
    return table


def register(app: typer.Typer) -> None:
    """Add `corral breakers …` to `app`."""
    app.add_typer(breakers_app, name="breakers")
