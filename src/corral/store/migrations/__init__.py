"""Versioned schema migrations: one `NNNN_name.sql` file each, shared by the dialects.

A shared file (`common/`) may use tokens for what differs between dialects (`{{name}}`, see
`TOKENS`); a dialect folder (`sqlite/`, `postgresql/`) overrides a whole file only when more than
a token differs. A migration is applied once, in order, inside the transaction that records it
in `corral_schema`. A database is never migrated silently: a fresh one is created at the latest
version; an older one is upgraded only on request (`corral db migrate`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib.resources import files
from typing import Literal

from corral.errors import SchemaVersionMismatch

Dialect = Literal["sqlite", "postgresql"]

_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
_TOKEN = re.compile(r"\{\{(\w+)\}\}")

TOKENS: dict[Dialect, dict[str, str]] = {
    "sqlite": {"serial_primary_key": "INTEGER PRIMARY KEY AUTOINCREMENT"},
    "postgresql": {"serial_primary_key": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY"},
}

SCHEMA_TABLE = (
    "CREATE TABLE IF NOT EXISTS corral_schema ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at DOUBLE PRECISION)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    def statements(self) -> list[str]:
        """The file's statements, split on `;` at line ends, except inside a `$$` body (a `DO`
        block or a function spanning lines). A file of comments only has none: a migration
        that this dialect has nothing to do for (PostgreSQL's row-level security on SQLite)."""
        found: list[str] = []
        current: list[str] = []
        in_body = False
        for line in self.sql.splitlines():
            if not in_body and line.lstrip().startswith("--"):
                continue
            current.append(line)
            in_body ^= line.count("$$") % 2 == 1
            if not in_body and line.rstrip().endswith(";"):
                found.append("\n".join(current).strip().rstrip(";").strip())
                current = []
        found.append("\n".join(current).strip().rstrip(";").strip())
        return [statement for statement in found if statement]


@cache
def load_migrations(dialect: Dialect) -> tuple[Migration, ...]:
    """The migrations of `dialect`, in order, with its tokens substituted."""
    chosen: dict[str, str] = {}
    for folder in ("common", dialect):
        for entry in files(__package__).joinpath(folder).iterdir():
            if _NAME.match(entry.name):
                chosen[entry.name] = entry.read_text(encoding="utf-8")
    tokens = TOKENS[dialect]
    found: list[Migration] = []
    for filename, text in chosen.items():
        match = _NAME.match(filename)
        assert match is not None

        def substitute(token: re.Match[str], filename: str = filename) -> str:
            if token[1] not in tokens:
                raise RuntimeError(f"migration {filename}: unknown token {token[0]}")
            return tokens[token[1]]

        found.append(Migration(int(match[1]), match[2], _TOKEN.sub(substitute, text)))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{dialect} migrations are not numbered 1..n: {versions}")
    return tuple(found)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    """Where a database's schema stands against this Corral's migrations."""

    current: int | None
    """The database's version; None for an empty database."""
    latest: int
    pending: tuple[Migration, ...]

    @property
    def up_to_date(self) -> bool:
        return self.current == self.latest


def schema_status(current: int | None, dialect: Dialect) -> SchemaStatus:
    migrations = load_migrations(dialect)
    done = current or 0
    return SchemaStatus(
        current, migrations[-1].version, tuple(m for m in migrations if m.version > done)
    )


def refuse_unless_current(status: SchemaStatus, where: str) -> None:
    """Open only a database at exactly this Corral's version: never change an old one silently."""
    if status.current is not None and status.current > status.latest:
        raise SchemaVersionMismatch(
            f"{where} has schema version {status.current}, newer than this Corral understands "
            f"({status.latest}); upgrade Corral to use it",
            where=where,
            current=status.current,
            latest=status.latest,
        )
    if status.current is not None and status.current < status.latest:
        raise SchemaVersionMismatch(
            f"{where} has schema version {status.current}; this Corral needs {status.latest}. "
            "Back it up, then run `corral db migrate` to upgrade it",
            where=where,
            current=status.current,
            latest=status.latest,
        )
