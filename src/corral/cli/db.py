"""`corral db status|migrate`: the database's schema version, and upgrading it on request.

A new Corral never changes an old database by itself: every other command refuses a database at
another schema version (exit 3). These two commands work on any version, so they use the store
without `open()`: `schema_status()` only reads, `migrate()` applies what is pending in one
transaction (serialised between processes) and refuses a database newer than this Corral.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import typer

from corral.cli.exits import ExitCode
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps
from corral.store.migrations import Migration, SchemaStatus

db_app = typer.Typer(
    name="db",
    help="The database's schema: see its version (status), upgrade it (migrate).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]
SchemaState = Literal["up_to_date", "pending", "empty", "newer"]

STATUS_EPILOG = """\
Examples:

  corral db status

  corral db status --json | jq .pending

  corral db status || corral db migrate     # in a deploy script

Exit codes: 0 up to date · 5 migrations pending (an older or empty database: run corral db
migrate) · 3 the database cannot be used (unreachable, corrupt, or newer than this Corral).
"""

MIGRATE_EPILOG = """\
Examples:

  corral db migrate

  corral db migrate --json

Back the database up first. Stop the workers of the old Corral version before migrating, and
start the new version's workers after: a running Corral refuses a database at another version.
Running it on an up-to-date database changes nothing. Exit 3 on a database newer than this Corral.
"""


def state_of(status: SchemaStatus) -> SchemaState:
    if status.current is None:
        return "empty"
    if status.current > status.latest:
        return "newer"
    return "up_to_date" if status.up_to_date else "pending"


def migration_json(migration: Migration) -> dict[str, Any]:
    return {"version": migration.version, "name": migration.name}


def migration_label(migration: Migration) -> str:
    return f"{migration.version:04d}_{migration.name}"


def status_json(settings: Settings, status: SchemaStatus) -> dict[str, Any]:
    """`db status --json`; `db migrate --json` adds `applied`."""
    return {
        "database": settings.database_label,
        "state": state_of(status),
        "up_to_date": status.up_to_date,
        "current": status.current,
        "latest": status.latest,
        "pending": [migration_json(m) for m in status.pending],
    }


def exit_code_of(status: SchemaStatus) -> ExitCode:
    state = state_of(status)
    if state == "up_to_date":
        return ExitCode.OK
    if state == "newer":
        return ExitCode.STORE
    return ExitCode.MIGRATIONS_PENDING


@db_app.command("status", epilog=STATUS_EPILOG)
def status_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Show the database's schema version against this Corral's, and the migrations pending.

    Changes nothing, and works on a database of any version (and on a missing one).
    """
    settings = Settings.of(ctx)

    async def read() -> SchemaStatus:
        store = settings.open_store(existing=True)
        try:
            return await store.schema_status()
        finally:
            await store.close()

    status = run_async(read)
    if json_output:
        typer.echo(dumps(status_json(settings, status)))
    else:
        _print_status(settings, status)
    raise typer.Exit(exit_code_of(status))


def _print_status(settings: Settings, status: SchemaStatus) -> None:
    where = settings.database_label
    state = state_of(status)
    if state == "up_to_date":
        typer.echo(f"{where}: schema version {status.current}, up to date")
        return
    if state == "newer":
        # stderr: a state this Corral cannot use, like every other exit 3.
        typer.echo(
            f"{where}: schema version {status.current} is newer than this Corral understands "
            f"({status.latest}).\nhint: upgrade Corral to a version that knows schema "
            f"{status.current}; do not use this Corral on it",
            err=True,
        )
        return
    if state == "empty":
        typer.echo(
            f"{where}: no Corral schema yet (this Corral's is version {status.latest}).\n"
            "Create it with `corral db migrate` (the first `corral run` or `corral worker` "
            "also creates it)."
        )
        return
    typer.echo(
        f"{where}: schema version {status.current}; this Corral needs {status.latest}. "
        f"{len(status.pending)} migration(s) pending:"
    )
    for migration in status.pending:
        typer.echo(f"  {migration_label(migration)}")
    typer.echo(
        "Back the database up, stop the workers of the old version, then run `corral db migrate`."
    )


@db_app.command("migrate", epilog=MIGRATE_EPILOG)
def migrate_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """Apply the pending migrations, in order, in one transaction; print those applied.

    Creates the schema of an empty database. Refuses (exit 3, changing nothing) a database
    newer than this Corral.
    """
    settings = Settings.of(ctx)

    async def migrate() -> tuple[list[Migration], SchemaStatus]:
        store = settings.open_store()
        try:
            applied = await store.migrate()
            return applied, await store.schema_status()
        finally:
            await store.close()

    applied, status = run_async(migrate)
    if json_output:
        shown = status_json(settings, status)
        shown["applied"] = [migration_json(m) for m in applied]
        typer.echo(dumps(shown))
        return
    where = settings.database_label
    if not applied:
        typer.echo(f"{where}: schema version {status.current}, already up to date; nothing done")
        return
    for migration in applied:
        typer.echo(f"applied {migration_label(migration)}")
    typer.echo(f"{where}: schema version {status.current}, up to date")
