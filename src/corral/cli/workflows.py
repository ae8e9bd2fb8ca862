"""`corral workflows`: the workflows this CLI knows (from --app, or the demo)."""

from __future__ import annotations

from typing import Annotated

import typer

from corral.cli.display import answer_table, console, workflows_table
from corral.cli.exits import reporting_errors
from corral.cli.session import Settings
from corral.cli.shapes import dumps, workflow_json
from corral.control.app_loading import load_workflows

EPILOG = """\
Examples:

  corral --app myproject.flows workflows

  corral workflows --json

Workflows not listed here can still be run by reference: corral run package.module:function
"""


def workflows_command(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")
    ] = False,
) -> None:
    """List the registered workflows: name, version, input and output types."""
    settings = Settings.of(ctx)
    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            answers = remote.get("/workflows")
        if json_output:
            typer.echo(dumps({"workflows": answers}))
        elif answers:
            console().print(answer_table(answers, ["name", "kind", "version", "description"]))
        else:
            typer.echo(f"{settings.server} was given no workflows (corral server --app)", err=True)
        return
    with reporting_errors():
        workflows = sorted(load_workflows(settings.app), key=lambda wf: wf.name)
    if json_output:
        typer.echo(dumps({"workflows": [workflow_json(wf) for wf in workflows]}))
        return
    if not workflows:
        source = f"--app {settings.app}" if settings.app else "the demo (corral.demo.workflows)"
        typer.echo(
            f"no workflows found in {source}; load yours with --app MODULE[:ATTR] "
            "or name one as package.module:function",
            err=True,
        )
        return
    console().print(workflows_table(workflows))


def register(app: typer.Typer) -> None:
    app.command("workflows", epilog=EPILOG)(workflows_command)
