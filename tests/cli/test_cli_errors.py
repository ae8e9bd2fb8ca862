"""Bad databases and the one mapping of errors to exit codes; every command's --help."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from corral import (
    CorralError,
    InvalidInput,
    NeedsReconciliation,
    RunAlreadyFinished,
    RunFailed,
    RunNotFound,
    StepFailed,
    StoreError,
    StoreUnavailable,
    UnknownWorkflow,
    UsageError,
)
from corral.cli.exits import ExitCode, exit_code_for, exit_code_for_status
from corral.store import RUN_STATUSES

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

LockHolder = Callable[[Path], subprocess.Popen[str]]


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (UnknownWorkflow("x"), ExitCode.USAGE),
        (InvalidInput("x"), ExitCode.USAGE),
        (RunNotFound("x"), ExitCode.USAGE),
        (RunAlreadyFinished("x"), ExitCode.USAGE),
        (UsageError("x"), ExitCode.USAGE),
        (StoreError("x"), ExitCode.STORE),
        (StoreUnavailable("x"), ExitCode.STORE),
        (RunFailed("x"), ExitCode.RUN_DID_NOT_SUCCEED),
        (StepFailed("x"), ExitCode.RUN_DID_NOT_SUCCEED),
        (NeedsReconciliation("x"), ExitCode.RUN_DID_NOT_SUCCEED),
        (CorralError("x"), ExitCode.INTERNAL),
    ],
)
def test_each_error_branch_has_its_exit_code(error: CorralError, code: ExitCode) -> None:
    assert exit_code_for(error) == code


def test_exit_codes_of_run_wait_by_status() -> None:
    by_status = {status: exit_code_for_status(status) for status in RUN_STATUSES}
    assert by_status == {
        "succeeded": 0,
        "failed": 1,
        "cancelled": 1,
        "needs_reconciliation": 1,
        "pending": 4,
        "running": 4,
        "waiting": 4,
    }


def test_a_corrupt_database_file_exits_3_and_is_left_alone(cli: Invoke, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    content = os.urandom(8192)
    junk.write_bytes(content)
    for args in (("runs", "list"), ("run", "greet", "-i", '{"name": "a"}'), ("worker",)):
        bad = cli(*args, env={"CORRAL_DATABASE_URL": f"sqlite:///{junk}"}).no_traceback()
        assert bad.exit_code == 3, args
        assert "error (store_error)" in bad.stderr
        assert "junk.db is not a Corral database or is corrupt" in bad.stderr
    assert junk.read_bytes() == content


def test_a_sqlite_database_of_another_program_exits_3(cli: Invoke, tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    try:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    finally:
        conn.close()
    bad = cli("runs", "list", env={"CORRAL_DATABASE_URL": f"sqlite:///{other}"})
    assert bad.exit_code == 3
    assert "not a Corral one" in bad.stderr


def test_a_url_that_is_not_sqlite_exits_3_with_the_expected_form(cli: Invoke) -> None:
    bad = cli("runs", "list", env={"CORRAL_DATABASE_URL": "corral.db"}).no_traceback()
    assert bad.exit_code == 3
    assert "expected sqlite:///path/to/file.db" in bad.stderr
    assert "CORRAL_DATABASE_URL" in bad.stderr


def test_a_locked_database_exits_3_after_the_busy_timeout(
    cli: Invoke, tmp_path: Path, hold_write_lock: LockHolder
) -> None:
    run_id = cli("run", "greet", "-i", '{"name": "a"}').stdout.strip()
    hold_write_lock(tmp_path / "corral.db")
    quick = {"CORRAL_BUSY_TIMEOUT": "0.2"}
    for args in (("run", "greet", "-i", '{"name": "b"}'), ("runs", "cancel", run_id)):
        locked = cli(*args, env=quick).no_traceback()
        assert locked.exit_code == 3, args
        assert "error (store_unavailable)" in locked.stderr
        assert "corral.db is locked by another process (waited 0.2s)" in locked.stderr
        assert "--busy-timeout" in locked.stderr


COMMANDS = [
    ("run",),
    ("worker",),
    ("runs", "list"),
    ("runs", "show"),
    ("runs", "cancel"),
    ("signal",),
    ("workflows",),
    ("db", "status"),
    ("db", "migrate"),
]


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(cli: Invoke, command: tuple[str, ...]) -> None:
    shown = cli(*command, "--help")
    assert shown.exit_code == 0
    assert "Usage: corral" in shown.stdout
    assert "Example" in shown.stdout


def test_root_help_lists_commands_env_vars_and_exit_codes(cli: Invoke) -> None:
    shown = cli("--help")
    assert shown.exit_code == 0
    for word in ("run", "worker", "runs", "signal", "workflows", "db", "CORRAL_DATABASE_URL"):
        assert word in shown.stdout
    assert "Exit codes" in shown.stdout


def test_version(cli: Invoke) -> None:
    assert cli("--version").stdout.startswith("corral ")


def test_an_unknown_command_is_a_usage_error(cli: Invoke) -> None:
    assert cli("launch").exit_code == 2


def test_reading_commands_do_not_create_a_database(tmp_path: Path) -> None:
    """A mistyped --database-url is reported, and no file or folder appears."""
    missing = tmp_path / "typo" / "corral.db"
    for args in (["runs", "list"], ["runs", "show", "r-1"], ["signal", "r-1", "go"]):
        done = subprocess.run(
            [sys.executable, "-m", "corral.cli", "--database-url", f"sqlite:///{missing}", *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 3, done.stderr
        assert f"no Corral database at {missing}" in done.stderr
        assert not missing.parent.exists()
