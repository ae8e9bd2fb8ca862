"""Fixtures for the CLI tests: the CLI in-process (typer's CliRunner) and as a real process.

Both run against a SQLite file under the test's tmp_path, with the workflows of
`tests/cli/sample_app.py` (`CORRAL_APP=tests.cli.sample_app`) and the test's tmp_path as the
current directory. The repository root is on the import path so `tests.cli.sample_app` imports.
A test points a command at another database (a PostgreSQL schema of its own, a database at an
older schema version) with `env={"CORRAL_DATABASE_URL": ...}`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from corral.cli.main import app
from corral.store import SQLiteStore
from corral.store.migrations import SCHEMA_TABLE, load_migrations
from corral.store.postgresql import parse_postgres_url
from corral.store.sqlite import parse_sqlite_url

REPO_ROOT = Path(__file__).resolve().parents[2]
SAMPLE_APP = "tests.cli.sample_app"
PROCESS_TIMEOUT = 60.0
"""Seconds any one `corral` process may take before the test kills it and fails."""
POSTGRES_URL = os.environ.get(
    "CORRAL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
"""The PostgreSQL server of the suites (as in tests/conftest.py); each test gets a schema."""


@dataclass(frozen=True)
class Outcome:
    """What one `corral` invocation did: exit code, stdout, stderr."""

    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    def no_traceback(self) -> Outcome:
        assert "Traceback" not in self.stdout + self.stderr, self.stderr
        return self


Invoke = Callable[..., Outcome]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """An empty Corral database (commands about existing runs refuse to create one)."""
    url = f"sqlite:///{tmp_path / 'corral.db'}"

    async def create() -> None:
        store = SQLiteStore(url)
        await store.open()
        await store.close()

    asyncio.run(create())
    return url


@pytest.fixture
def cli(tmp_path: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Invoke:
    """`cli("run", "greet", ...)`: the CLI in this process, against the test's database."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))  # also restores sys.path changed by the CLI
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def invoke(
        *args: str, stdin: str | None = None, env: Mapping[str, str | None] | None = None
    ) -> Outcome:
        environment: dict[str, str | None] = {
            "CORRAL_DATABASE_URL": db_url,
            "CORRAL_APP": SAMPLE_APP,
            "CORRAL_BUSY_TIMEOUT": None,
            "CORRAL_DEBUG": None,
            "COLUMNS": None,
        }
        environment.update(env or {})
        result = runner.invoke(app, list(args), input=stdin, env=environment)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return Outcome(result.exit_code, result.stdout, result.stderr)

    return invoke


def corral_command() -> list[str]:
    """The installed `corral` script of this virtualenv, else `python -m corral.cli`."""
    script = Path(sys.executable).parent / "corral"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "corral.cli"]


@pytest.fixture
def corral_argv() -> list[str]:
    """The command line that starts the real `corral` executable."""
    return corral_command()


def process_env(db_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CORRAL_") and key not in ("COLUMNS", "PYTHONPATH")
    }
    env.update(
        {"PYTHONPATH": str(REPO_ROOT), "CORRAL_DATABASE_URL": db_url, "CORRAL_APP": SAMPLE_APP}
    )
    env.update(extra or {})
    return env


@pytest.fixture
def corral_exe(tmp_path: Path, db_url: str) -> Invoke:
    """`corral_exe("run", ...)`: the real `corral` executable as a subprocess, with a timeout."""

    def invoke(
        *args: str, stdin: str | None = None, env: Mapping[str, str] | None = None
    ) -> Outcome:
        done = subprocess.run(
            [*corral_command(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=tmp_path,
            env=process_env(db_url, env),
            timeout=PROCESS_TIMEOUT,
            check=False,
        )
        return Outcome(done.returncode, done.stdout, done.stderr)

    return invoke


@pytest.fixture
def spawn(tmp_path: Path, db_url: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """Start a long-lived process (a worker, a lock holder); every one is killed at teardown."""
    started: list[subprocess.Popen[str]] = []

    def start(command: list[str], *, env: Mapping[str, str] | None = None) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
            env=process_env(db_url, env),
        )
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=PROCESS_TIMEOUT)


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold_write_lock(
    spawn: Callable[..., subprocess.Popen[str]],
) -> Callable[[Path], subprocess.Popen[str]]:
    """`hold_write_lock(path)`: a helper process holding an exclusive write lock on `path`
    (until the test ends and it is killed)."""

    def hold(path: Path) -> subprocess.Popen[str]:
        holder = spawn([sys.executable, "-c", HOLD_LOCK, str(path), str(PROCESS_TIMEOUT)])
        assert holder.stdout is not None
        line = holder.stdout.readline()  # returns at the print, or at EOF if the helper died
        assert line.strip() == "locked", holder.stderr.read() if holder.stderr else ""
        return holder

    return hold


def drop_postgres_schema(url: str) -> None:
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL URL naming a schema of the test's own (not created yet; dropped after)."""
    url = f"{POSTGRES_URL}?schema=test_cli_{uuid.uuid4().hex[:12]}"
    yield url
    drop_postgres_schema(url)


@pytest.fixture(params=["sqlite", "postgresql"])
def blank_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that does not exist yet, on each backend: a missing SQLite file, or a
    PostgreSQL schema not yet created (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'blank.db'}"
        return
    url = f"{POSTGRES_URL}?schema=test_cli_{uuid.uuid4().hex[:12]}"
    yield url
    drop_postgres_schema(url)


FUTURE_MIGRATION = "from_the_future"


def make_database_at(url: str, version: int) -> None:
    """Build at `url` the Corral database an older (or newer) Corral would have left.

    Applies migrations 1..`version` and records them in `corral_schema`, exactly as the store
    does; a `version` past this Corral's latest also records made-up later migrations.
    """
    dialect = "sqlite" if url.startswith("sqlite:") else "postgresql"
    migrations = load_migrations(dialect)
    rows = [(m.version, m.name) for m in migrations if m.version <= version]
    rows += [(v, FUTURE_MIGRATION) for v in range(len(migrations) + 1, version + 1)]
    statements = [SCHEMA_TABLE]
    statements += [s for m in migrations if m.version <= version for s in m.statements()]
    if dialect == "sqlite":
        path, _ = parse_sqlite_url(url)
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for statement in statements:
                conn.execute(statement)
            conn.executemany("INSERT INTO corral_schema (version, name) VALUES (?, ?)", rows)
            conn.execute("COMMIT")
        finally:
            conn.close()
        return
    conninfo, schema = parse_postgres_url(url)
    with psycopg.connect(conninfo) as pg, pg.transaction():
        pg.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        pg.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        for statement in statements:
            pg.execute(statement.encode())  # bytes: run as given, no %-placeholder parsing
        pg.cursor().executemany("INSERT INTO corral_schema (version, name) VALUES (%s, %s)", rows)


@pytest.fixture
def database_at() -> Callable[[str, int], None]:
    """`database_at(url, version)`: build the database an older (or newer) Corral left
    (see `make_database_at`)."""
    return make_database_at
