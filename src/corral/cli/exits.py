"""Exit codes, and the one place where errors become a message and an exit code.

Every command runs its body inside `reporting_errors()`: a `CorralError` is printed on stderr as
`error (code): message` with a hint, and the process exits with the code of its branch. A
traceback is printed only for a bug in Corral itself, and only with `CORRAL_DEBUG=1`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import NoReturn

import typer

from corral.cli.remote import RemoteError
from corral.errors import (
    CorralError,
    InvalidInput,
    RunAlreadyFinished,
    RunFailure,
    RunNotFound,
    SchemaVersionMismatch,
    StoreError,
    StoreUnavailable,
    UnknownWorkflow,
    UsageError,
)
from corral.store import RunStatus


class ExitCode(IntEnum):
    """The exit codes of every `corral` command (documented in docs/cli.md)."""

    OK = 0
    """Done: the run was started, succeeded (with --wait), was cancelled or signalled."""
    RUN_DID_NOT_SUCCEED = 1
    """With --wait: the run failed, was cancelled or needs reconciliation."""
    USAGE = 2
    """Bad input: an unknown option or workflow, malformed JSON, input failing its schema, a run
    that does not exist, a signal to a finished run, an --app module that does not import."""
    STORE = 3
    """The database cannot be used: a bad URL, not a Corral database (corrupt), locked,
    PostgreSQL unreachable, or a schema version other than this Corral's (older: run
    `corral db migrate`; newer: upgrade Corral)."""
    NOT_FINISHED = 4
    """With --wait: the run has not finished (parked on a timer or a signal, --timeout passed,
    or interrupted); a worker will continue it."""
    MIGRATIONS_PENDING = 5
    """`corral db status`: the database is empty or older than this Corral; `corral db migrate`
    brings it up to date."""
    INTERNAL = 70
    """A bug in Corral: please report it (run again with CORRAL_DEBUG=1 for the traceback)."""
    INTERRUPTED = 130
    """Interrupted twice (Ctrl-C): stopped without handing runs back; their leases expire."""


EXIT_CODES_HELP = (
    "Exit codes: 0 ok · 1 the run failed, was cancelled or needs reconciliation (--wait) · "
    "2 usage error (bad option, JSON, input, unknown workflow or run) · 3 database unusable "
    "(corrupt, locked, unreachable, bad URL, other schema version) · 4 the run has not finished "
    "yet (--wait) · 5 migrations pending (db status) · 70 internal error."
)


def exit_code_for_status(status: RunStatus) -> ExitCode:
    """The exit code of `run --wait` for the status the run had when the command returned."""
    if status == "succeeded":
        return ExitCode.OK
    if status in ("failed", "cancelled", "needs_reconciliation"):
        return ExitCode.RUN_DID_NOT_SUCCEED
    return ExitCode.NOT_FINISHED


def exit_code_for(error: CorralError) -> ExitCode:
    if isinstance(error, RemoteError):  # remote mode: the answer's status decided it
        return ExitCode(error.exit_code)
    # StoreError is a UsageError in the error tree; it has its own exit code, so test it first.
    if isinstance(error, StoreError):
        return ExitCode.STORE
    if isinstance(error, UsageError):
        return ExitCode.USAGE
    if isinstance(error, RunFailure):
        return ExitCode.RUN_DID_NOT_SUCCEED
    return ExitCode.INTERNAL


def hint_for(error: CorralError) -> str | None:
    """What to do next, for the errors a user can fix."""
    if isinstance(error, RemoteError):
        return error.hint
    if isinstance(error, UnknownWorkflow):
        return (
            "name a registered workflow (see `corral workflows`), load yours with --app MODULE "
            "(or CORRAL_APP), or name one as package.module:function"
        )
    if isinstance(error, InvalidInput) and "workflow" in error.ids:
        return "give the input as JSON with --input '{...}' or --input-file PATH"
    if isinstance(error, RunNotFound):
        return "list the runs with `corral runs list` (and check --database-url)"
    if isinstance(error, RunAlreadyFinished):
        return f"see the run with `corral runs show {error.ids.get('run_id', 'RUN_ID')}`"
    if isinstance(error, StoreUnavailable):
        if "path" in error.ids:  # SQLite names its file; PostgreSQL names its server's URL
            return (
                "another process holds the database; try again, or wait longer with "
                "--busy-timeout (CORRAL_BUSY_TIMEOUT)"
            )
        return (
            "check that PostgreSQL is running and accepts connections at that host and port, "
            "and the user and database in --database-url (CORRAL_DATABASE_URL); then try again"
        )
    if isinstance(error, SchemaVersionMismatch):
        if error.database_is_older:
            return (
                "see what would change with `corral db status`; back up, then `corral db migrate`"
            )
        return "this database was upgraded by a newer Corral: install that version or newer"
    if isinstance(error, StoreError):
        return (
            "check --database-url (CORRAL_DATABASE_URL): sqlite:///path/to/corral.db or "
            "postgresql://user@host:port/database; the default is ./.corral/corral.db"
        )
    return None


def print_error(message: str, *, code: str | None = None, hint: str | None = None) -> None:
    """Print an error on stderr; stdout stays clean for the data a script reads."""
    label = f"error ({code})" if code else "error"
    typer.echo(f"{label}: {message}", err=True)
    if hint:
        typer.echo(f"hint: {hint}", err=True)


def _debug() -> bool:
    return os.environ.get("CORRAL_DEBUG", "") not in ("", "0")


@contextmanager
def reporting_errors() -> Iterator[None]:
    """Turn errors raised by a command's body into a message on stderr and an exit code."""
    try:
        yield
    except (typer.Exit, typer.Abort, typer.BadParameter):
        raise
    except CorralError as error:
        if _debug():
            raise
        code = error.problem_code if isinstance(error, RemoteError) else error.code
        print_error(error.message, code=code, hint=hint_for(error))
        raise typer.Exit(exit_code_for(error)) from None
    except KeyboardInterrupt:
        print_error("interrupted; runs in flight are resumed by a worker once their lease expires")
        raise typer.Exit(ExitCode.INTERRUPTED) from None
    except Exception as error:
        if _debug():
            raise
        print_error(
            f"internal error: {type(error).__name__}: {error}",
            hint="this is a bug in Corral; run again with CORRAL_DEBUG=1 to see the traceback",
        )
        raise typer.Exit(ExitCode.INTERNAL) from None


def fail(message: str, *, code: ExitCode = ExitCode.USAGE, hint: str | None = None) -> NoReturn:
    """Stop a command with a message that is not a CorralError (e.g. conflicting options)."""
    print_error(message, hint=hint)
    raise typer.Exit(code)
