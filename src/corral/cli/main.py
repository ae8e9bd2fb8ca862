"""The `corral` command: global options, the command tree, and the console-script entry point."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated

import typer

import corral
from corral.cli import (
    approvals,
    audit,
    breakers,
    costs,
    db,
    demo,
    governance_admin,
    inspect_runs,
    keys,
    observe_traces,
    policy,
    retention,
    runs,
    search,
    server,
    signals,
    start,
    webhooks,
    worker,
    workflows,
)
from corral.cli.exits import EXIT_CODES_HELP, ExitCode, fail
from corral.cli.session import DEFAULT_BUSY_TIMEOUT, Settings
from corral.control.app_loading import ensure_cwd_on_path
from corral.store import DEFAULT_DATABASE_URL

EPILOG = f"""\
Examples:

  corral run greet --input '{{"name": "Ada"}}' --wait

  corral --app myproject.flows worker

  corral runs list --status waiting

  corral runs show RUN_ID

  corral --database-url postgresql://corral@db.internal:5432/corral db status

  CORRAL_API_KEY=crl_... corral --server https://corral.internal:8000 approvals list

Every option has an environment variable (CORRAL_DATABASE_URL, CORRAL_APP, CORRAL_BUSY_TIMEOUT,
CORRAL_TENANT, CORRAL_PRINCIPAL, CORRAL_SERVER, CORRAL_API_KEY).

{EXIT_CODES_HELP}

Reference: docs/cli.md
"""

app = typer.Typer(
    name="corral",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"corral {corral.__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    database_url: Annotated[
        str,
        typer.Option(
            "--database-url",
            metavar="URL",
            envvar="CORRAL_DATABASE_URL",
            help="Where runs live: sqlite:///relative/path.db, sqlite:////absolute/path.db, or "
            "postgresql://user[:password]@host[:port]/database[?schema=NAME] (many workers on "
            "many hosts). The default is a file under ./.corral/.",
        ),
    ] = DEFAULT_DATABASE_URL,
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            metavar="MODULE[:ATTR]",
            envvar="CORRAL_APP",
            help="Where your workflows live: a module (every workflow at its top level), or "
            "MODULE:ATTR naming a Corral instance, a workflow, or a list of workflows. Imported "
            "from the current directory. Default: the demo workflows, if installed.",
            show_default=False,
        ),
    ] = None,
    busy_timeout: Annotated[
        float,
        typer.Option(
            "--busy-timeout",
            metavar="SECONDS",
            envvar="CORRAL_BUSY_TIMEOUT",
            min=0,
            help="SQLite: how long to wait for a database locked by another process before "
            "giving up (exit 3).",
        ),
    ] = DEFAULT_BUSY_TIMEOUT,
    tenant: Annotated[
        str,
        typer.Option(
            "--tenant",
            metavar="NAME",
            envvar="CORRAL_TENANT",
            help="The tenant whose runs, policies, approvals and audit log commands act on.",
        ),
    ] = "default",
    principal: Annotated[
        str | None,
        typer.Option(
            "--as",
            metavar="PRINCIPAL",
            envvar="CORRAL_PRINCIPAL",
            help="Who you are, for commands that decide or change something (approvals, "
            "policies): a principal of the tenant (`corral principals add`). Default: your "
            "login name.",
            show_default=False,
        ),
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            metavar="URL",
            envvar="CORRAL_SERVER",
            help="Remote mode: talk to the Corral server at URL (`corral server`) instead of a "
            "database, as the key's tenant and principal. Commands the API does not offer "
            "refuse it (exit 2).",
            show_default=False,
        ),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            metavar="TOKEN",
            envvar="CORRAL_API_KEY",
            help="The API key for --server (crl_...). Prefer the environment variable "
            "CORRAL_API_KEY: a key on the command line lands in your shell history.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print Corral's version and exit."
        ),
    ] = False,
) -> None:
    """Corral: durable, governed runs for fleets of LLM agents.

    Start runs of workflows and agents, run workers, and inspect, signal and cancel runs, on
    SQLite or PostgreSQL. Govern them: principals, policies, approvals, kill switches and the
    audit log. `corral db status` / `corral db migrate` check and upgrade the database's schema.
    """
    ensure_cwd_on_path()
    if server is not None:
        _check_remote_options(ctx, key)
    ctx.obj = Settings(
        database_url=database_url,
        app=app_ref,
        busy_timeout=busy_timeout,
        tenant=tenant,
        principal=principal or getpass.getuser(),
        server=server or None,
        key=key,
    )


def _check_remote_options(ctx: typer.Context, key: str | None) -> None:
    """`--server` needs a key, and acts as the key's tenant and principal: an explicit
    `--tenant` or `--as` would be silently wrong, so it is refused (their environment variables,
    often set for local work, are ignored)."""
    if not key:
        fail(
            "--server needs an API key: set CORRAL_API_KEY (or give --key)",
            code=ExitCode.USAGE,
            hint="an admin makes one with `corral keys create --tenant T --role R`",
        )
    for name, option in (("tenant", "--tenant"), ("principal", "--as")):
        source = ctx.get_parameter_source(name)
        if source is not None and source.name == "COMMANDLINE":
            fail(
                f"{option} cannot be used with --server: a remote command acts as the tenant "
                "and principal its API key is bound to",
                hint="use a key of that tenant or principal (`corral keys create`)",
            )


start.register(app)
worker.register(app)
app.add_typer(runs.runs_app, name="runs")
app.add_typer(db.db_app, name="db")
signals.register(app)
workflows.register(app)
demo.register(app)
policy.register(app)
approvals.register(app)
audit.register(app)
governance_admin.register(app)
breakers.register(app)
observe_traces.register(app, runs.runs_app)
inspect_runs.register(app, runs.runs_app)
retention.register(app, runs.runs_app)
costs.register(app, runs.runs_app)
search.register(app, runs.runs_app)
keys.register(app)
webhooks.register(app)
server.register(app)


def main() -> None:
    """The `corral` console script."""
    try:
        app(prog_name="corral")
    except BrokenPipeError:
        # The reader went away (`corral runs list | head`): not an error of ours.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
