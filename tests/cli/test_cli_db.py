"""`corral db status|migrate`, databases at other schema versions, and the CLI on PostgreSQL.

Older databases are built for real (`database_at`: migration 1 only, as the previous Corral
left it) on a SQLite file and on a PostgreSQL schema of the test's own; upgrading them applies
the real migration 0002.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from corral.store.migrations import load_migrations
from corral.store.postgresql import parse_postgres_url
from corral.store.sqlite import parse_sqlite_url

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

DatabaseAt = Callable[[str, int], None]
FUTURE_MIGRATION = "from_the_future"  # what `database_at` records past the latest version

LATEST = load_migrations("sqlite")[-1].version
assert load_migrations("postgresql")[-1].version == LATEST
UNREACHABLE = "postgresql://postgres:s3cret@127.0.0.1:1/test"
"""Nothing listens on port 1: every connection is refused at once."""
GREET = ("run", "greet", "--input", '{"name": "Ada"}')


def recorded_versions(url: str) -> list[tuple[int, str]]:
    """The rows of `corral_schema`, read behind the CLI's back."""
    query = "SELECT version, name FROM corral_schema ORDER BY version"
    if url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(url)
        conn = sqlite3.connect(path)
        try:
            return [(int(v), str(n)) for v, n in conn.execute(query)]
        finally:
            conn.close()
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo, options=f"-c search_path={schema}") as pg:
        return [(int(v), str(n)) for v, n in pg.execute(query).fetchall()]


def indexes_of_runs(url: str) -> set[str]:
    if url.startswith("sqlite:"):
        path, _ = parse_sqlite_url(url)
        conn = sqlite3.connect(path)
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
            return {str(r[0]) for r in rows}
        finally:
            conn.close()
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo) as pg:
        found = pg.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (schema,))
        return {str(r[0]) for r in found.fetchall()}


def on(url: str) -> dict[str, str | None]:
    return {"CORRAL_DATABASE_URL": url}


# -- db status / db migrate, on both backends ----------------------------------------------------


def test_status_of_a_current_database_exits_0(
    cli: Invoke, blank_url: str, database_at: DatabaseAt
) -> None:
    database_at(blank_url, LATEST)
    shown = cli("db", "status", env=on(blank_url)).no_traceback()
    assert shown.exit_code == 0, shown.stderr
    assert f"schema version {LATEST}, up to date" in shown.stdout


def test_an_older_database_is_refused_then_migrated_then_works(
    cli: Invoke, blank_url: str, database_at: DatabaseAt
) -> None:
    database_at(blank_url, 1)
    before = recorded_versions(blank_url)
    assert before == [(1, "initial")]

    status = cli("db", "status", env=on(blank_url)).no_traceback()
    assert status.exit_code == 5, status.stderr
    assert f"schema version 1; this Corral needs {LATEST}" in status.stdout
    assert "0002_runs_by_workflow" in status.stdout
    assert "Back the database up" in status.stdout
    assert "corral db migrate" in status.stdout

    # Every other command refuses it and changes nothing: no silent upgrade.
    for args in (("runs", "list"), GREET, ("worker", "--until-idle")):
        refused = cli(*args, env=on(blank_url)).no_traceback()
        assert refused.exit_code == 3, (args, refused.stderr)
        assert "error (schema_mismatch)" in refused.stderr
        assert f"has schema version 1; this Corral needs {LATEST}" in refused.stderr
        assert "run `corral db migrate`" in refused.stderr
        assert "hint: see what would change with `corral db status`" in refused.stderr
    assert recorded_versions(blank_url) == before
    assert "runs_workflow_created" not in indexes_of_runs(blank_url)

    migrated = cli("db", "migrate", env=on(blank_url)).no_traceback()
    assert migrated.exit_code == 0, migrated.stderr
    assert "applied 0002_runs_by_workflow" in migrated.stdout
    assert "applied 0001" not in migrated.stdout
    assert f"schema version {LATEST}, up to date" in migrated.stdout
    assert recorded_versions(blank_url) == [(m.version, m.name) for m in load_migrations("sqlite")]
    assert "runs_workflow_created" in indexes_of_runs(blank_url)

    assert cli("db", "status", env=on(blank_url)).exit_code == 0
    run_id = cli(*GREET, env=on(blank_url)).stdout.strip()
    assert cli("worker", "--until-idle", env=on(blank_url)).exit_code == 0
    listed = cli("runs", "list", "--workflow", "greet", "--json", env=on(blank_url))
    assert [(r["run_id"], r["status"]) for r in listed.json()["runs"]] == [(run_id, "succeeded")]

    again = cli("db", "migrate", env=on(blank_url)).no_traceback()
    assert again.exit_code == 0
    assert "already up to date; nothing done" in again.stdout


def test_a_newer_database_is_refused_by_status_migrate_and_every_command(
    cli: Invoke, blank_url: str, database_at: DatabaseAt
) -> None:
    database_at(blank_url, LATEST + 1)
    before = recorded_versions(blank_url)
    assert before[-1] == (LATEST + 1, FUTURE_MIGRATION)

    status = cli("db", "status", env=on(blank_url)).no_traceback()
    assert status.exit_code == 3
    assert f"schema version {LATEST + 1} is newer than this Corral understands" in status.stderr
    assert "upgrade Corral" in status.stderr

    migrate = cli("db", "migrate", env=on(blank_url)).no_traceback()
    assert migrate.exit_code == 3
    assert "newer than this Corral understands" in migrate.stderr
    assert "upgrade Corral" in migrate.stderr

    listed = cli("runs", "list", env=on(blank_url)).no_traceback()
    assert listed.exit_code == 3
    assert "hint: this database was upgraded by a newer Corral" in listed.stderr
    assert recorded_versions(blank_url) == before


def test_an_empty_database_is_pending_until_migrate_creates_it(cli: Invoke, blank_url: str) -> None:
    status = cli("db", "status", "--json", env=on(blank_url)).no_traceback()
    assert status.exit_code == 5
    assert status.json()["state"] == "empty"
    assert [m["version"] for m in status.json()["pending"]] == list(range(1, LATEST + 1))
    if blank_url.startswith("sqlite:"):  # status only reads: it creates no file
        assert not parse_sqlite_url(blank_url)[0].exists()

    migrated = cli("db", "migrate", "--json", env=on(blank_url)).no_traceback()
    assert migrated.exit_code == 0, migrated.stderr
    assert [m["version"] for m in migrated.json()["applied"]] == list(range(1, LATEST + 1))
    assert cli("runs", "list", env=on(blank_url)).exit_code == 0


def test_status_and_migrate_json_shapes(
    cli: Invoke, tmp_path: Path, database_at: DatabaseAt
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database_at(url, 1)
    pending = [
        {"version": m.version, "name": m.name} for m in load_migrations("sqlite") if m.version > 1
    ]
    status = cli("db", "status", "--json", env=on(url))
    assert status.exit_code == 5
    assert status.json() == {
        "database": url,
        "state": "pending",
        "up_to_date": False,
        "current": 1,
        "latest": LATEST,
        "pending": pending,
    }
    migrated = cli("db", "migrate", "--json", env=on(url))
    assert migrated.exit_code == 0
    assert migrated.json() == {
        "database": url,
        "state": "up_to_date",
        "up_to_date": True,
        "current": LATEST,
        "latest": LATEST,
        "pending": [],
        "applied": pending,
    }
    current = cli("db", "status", "--json", env=on(url))
    assert current.exit_code == 0
    assert current.json()["state"] == "up_to_date"


def test_status_of_a_corrupt_file_exits_3_and_leaves_it_alone(cli: Invoke, tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"not a database" * 512)
    for command in ("status", "migrate"):
        bad = cli("db", command, env=on(f"sqlite:///{junk}")).no_traceback()
        assert bad.exit_code == 3, bad.stderr
        assert "is not a Corral database or is corrupt" in bad.stderr
    assert junk.read_bytes() == b"not a database" * 512


def test_status_of_a_sqlite_database_of_another_program_exits_3(
    cli: Invoke, tmp_path: Path
) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    try:
        conn.execute("CREATE TABLE notes (body TEXT)")
        conn.commit()
    finally:
        conn.close()
    for command in ("status", "migrate"):
        bad = cli("db", command, env=on(f"sqlite:///{other}")).no_traceback()
        assert bad.exit_code == 3
        assert "not a Corral one" in bad.stderr


# -- PostgreSQL unreachable -----------------------------------------------------------------------

EVERY_COMMAND = [
    GREET,
    ("run", "greet", "--input", '{"name": "Ada"}', "--wait", "--timeout", "1"),
    ("worker", "--until-idle"),
    ("runs", "list"),
    ("runs", "show", "r-1"),
    ("runs", "cancel", "r-1"),
    ("runs", "reconcile", "r-1", "--retry"),
    ("signal", "r-1", "go"),
    ("db", "status"),
    ("db", "migrate"),
]


@pytest.mark.parametrize("args", EVERY_COMMAND, ids=" ".join)
def test_unreachable_postgresql_exits_3_with_a_hint(cli: Invoke, args: tuple[str, ...]) -> None:
    done = cli(*args, env=on(UNREACHABLE)).no_traceback()
    assert done.exit_code == 3, done.stderr
    assert done.stdout == ""
    assert (
        "error (store_unavailable): PostgreSQL at postgresql://postgres:***@127.0.0.1:1/test "
        "is unreachable: " in done.stderr
    )
    assert "hint: check that PostgreSQL is running" in done.stderr
    assert "--busy-timeout" not in done.stderr  # that hint is for a locked SQLite file
    assert "s3cret" not in done.stderr


def test_reading_commands_do_not_create_a_postgresql_schema(cli: Invoke, postgres_url: str) -> None:
    for args in (("runs", "list"), ("runs", "show", "r-1"), ("db", "status")):
        done = cli(*args, env=on(postgres_url)).no_traceback()
        assert done.exit_code in (3, 5), done.stderr
    conninfo, schema = parse_postgres_url(postgres_url)
    with psycopg.connect(conninfo) as pg:
        found = pg.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchall()
    assert found == []
    listed = cli("runs", "list", env=on(postgres_url))
    assert listed.exit_code == 3
    assert "no Corral database at" in listed.stderr


# -- real processes --------------------------------------------------------------------------------


@pytest.mark.slow
def test_run_worker_show_on_postgresql_in_separate_processes(
    corral_exe: Invoke, postgres_url: str
) -> None:
    env = {"CORRAL_DATABASE_URL": postgres_url}
    started = corral_exe("run", "greet", "--input", '{"name": "Ada", "times": 2}', env=env)
    assert started.no_traceback().exit_code == 0, started.stderr
    run_id = started.stdout.strip()

    worked = corral_exe("worker", "--until-idle", env=env).no_traceback()
    assert worked.exit_code == 0, worked.stderr
    assert "claimed 1 run(s); 1 succeeded" in worked.stderr
    assert postgres_url in worked.stderr  # the start line names the database

    shown = corral_exe("runs", "show", run_id, "--json", env=env).no_traceback()
    assert shown.exit_code == 0, shown.stderr
    detail: dict[str, Any] = shown.json()
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"greeting": "hello Ada hello Ada"}
    assert [(s["seq"], s["name"], s["status"]) for s in detail["steps"]] == [
        (1, "make_greeting", "succeeded")
    ]
    assert corral_exe("db", "status", env=env).exit_code == 0


@pytest.mark.slow
def test_upgrade_of_an_older_postgresql_schema_in_separate_processes(
    corral_exe: Invoke, postgres_url: str, database_at: DatabaseAt
) -> None:
    env = {"CORRAL_DATABASE_URL": postgres_url}
    database_at(postgres_url, 1)
    refused = corral_exe("runs", "list", env=env).no_traceback()
    assert refused.exit_code == 3
    assert "corral db migrate" in refused.stderr
    assert corral_exe("db", "status", env=env).exit_code == 5
    migrated = corral_exe("db", "migrate", env=env).no_traceback()
    assert migrated.exit_code == 0, migrated.stderr
    assert "applied 0002_runs_by_workflow" in migrated.stdout
    assert corral_exe("runs", "list", env=env).exit_code == 0


@pytest.mark.slow
def test_unreachable_postgresql_in_a_real_process(corral_exe: Invoke) -> None:
    done = corral_exe("worker", env={"CORRAL_DATABASE_URL": UNREACHABLE}).no_traceback()
    assert done.exit_code == 3
    assert "is unreachable" in done.stderr
    assert "hint: check that PostgreSQL is running" in done.stderr


def test_db_is_in_the_root_help(cli: Invoke) -> None:
    shown = cli("--help")
    assert "db" in shown.stdout
    assert "postgresql://" in shown.stdout
    assert "5 migrations pending" in shown.stdout
