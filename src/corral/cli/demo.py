"""`corral demo`: the support-fleet tour (or, with `--order`, the order tour) on this database."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.exits import reporting_errors
from corral.cli.session import Settings

EPILOG = """\
Examples:

  corral demo                       # six tickets, a fleet of agents, one worker killed mid-way,
                                    # a large refund held for a human's approval

  corral demo --order               # one order workflow through kill -9, a signal and a resume

  corral --database-url sqlite:///tmp/demo.db demo

Agents run on the scripted model (deterministic, no API key). Exit code 0 when every ticket
(or the order) was handled, 1 otherwise.
"""


def demo_command(
    ctx: typer.Context,
    order: Annotated[
        bool,
        typer.Option(
            "--order", help="Run the order tour instead: one workflow, no agents, no model."
        ),
    ] = False,
) -> None:
    """Run the demo: a governed customer-support fleet of agents that survives `kill -9`.

    Applies the fleet's policy and adds two principals, starts the demo tickets as runs,
    executes them with real `corral worker` processes, kills one with SIGKILL mid-way, and shows
    that a new worker resumes its runs without repeating a refund. The $1,249 refund stops at an
    approval gate; the demo stops every worker, starts a fresh one and approves it with `corral
    approvals approve`, and the refund is made once. Then it prints what happened to each
    ticket and how to inspect the runs.
    """
    settings = Settings.of(ctx)
    with reporting_errors():
        if order:
            from corral.demo import order_tour

            code = order_tour.main(settings.database_url)
        else:
            from corral.demo import tour

            code = tour.main(settings.database_url)
    raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.command("demo", epilog=EPILOG)(demo_command)
