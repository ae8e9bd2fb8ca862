"""`corral signal`: send a named signal, with JSON data, to a run that waits for it."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from corral.cli.exits import reporting_errors
from corral.cli.inputs import parse_json
from corral.cli.remote import segment
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, signal_json
from corral.governance.run_control import send_signal
from corral.store import RunRecord, SignalRecord

EPILOG = """\
Examples:

  corral signal 3f1c0d2e-... approve --data '{"approved": true, "by": "ada"}'

  corral signal RUN_ID cancel-order

Signals are kept until the run asks for them, in the order they were sent. A signal to a run that
has finished is refused (exit 2) and nothing is stored.
"""


def signal_command(
    ctx: typer.Context,
    run_id: Annotated[
        str, typer.Argument(metavar="RUN_ID", help="The run to signal.", show_default=False)
    ],
    name: Annotated[
        str,
        typer.Argument(
            metavar="NAME",
            help="The signal's name, as in ctx.wait_for_signal(NAME).",
            show_default=False,
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(
            "--data",
            "-d",
            metavar="JSON",
            help="The signal's data as JSON (default: null).",
            show_default=False,
        ),
    ] = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the stored signal as JSON (see docs/cli.md).")
    ] = False,
) -> None:
    """Send signal NAME to a run that has not finished, and wake it if it waits for NAME.

    A worker (`corral worker`) then resumes the run.
    """
    settings = Settings.of(ctx)
    with reporting_errors():
        value: Any = None if data is None else parse_json(data, source="--data")

    async def send() -> tuple[SignalRecord, RunRecord]:
        async with settings.corral(existing=True) as corral:
            record = await send_signal(corral, run_id, name, value)
            return record, await corral.get_run(run_id)

    if settings.server is not None:
        path = f"/runs/{segment(run_id)}"
        with reporting_errors(), settings.remote() as remote:
            sent = remote.post(f"{path}/signals/{segment(name)}", {"data": value})
            status = remote.get(path)["status"]
        if json_output:  # the API's shape: no consumed_seq
            typer.echo(dumps(sent))
            return
    else:
        record, run = run_async(send)
        if json_output:
            typer.echo(dumps(signal_json(record)))
            return
        status = run.status
    typer.echo(f"sent signal {name!r} to run {run_id} (status {status})")


def register(app: typer.Typer) -> None:
    app.command("signal", epilog=EPILOG)(signal_command)
