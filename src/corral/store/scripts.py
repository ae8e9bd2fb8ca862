"""Transaction scripts: SQL written once, above the store, run by either backend in one transaction.

The layers above the engine (governance: policies, approvals, budgets, the audit log) keep tables
in the same database as the journal and must change them atomically with the audit entry that
records the change. They write their SQL as a *script*: a generator that yields `Statement`s and
receives each one's `Result`, then returns its value. The script does no I/O itself (the
sans-I/O style of h11), so the same code runs on SQLite's writer thread and on PostgreSQL's async
writer:

```python
def decide(approval_id: str, status: str) -> Script[bool]:
    result = yield Statement(
        "UPDATE approvals SET status = ? WHERE approval_id = ? AND status = 'pending'",
        (status, approval_id),
    )
    return result.rowcount == 1
```

Statements use `?` placeholders; a script that needs a dialect's own SQL (PostgreSQL's row locks)
receives the dialect when it is made (`ScriptFactory`). A script runs inside the writer's batch
transaction under a savepoint: if it raises, its writes are rolled back and the error is returned
to its caller, and the other operations of the batch are unaffected. Scripts that only read run
on a reader connection (`Store.read_script`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

T = TypeVar("T")

Dialect = Literal["sqlite", "postgresql"]


@dataclass(frozen=True, slots=True)
class Statement:
    """One SQL statement with `?` placeholders; `many=True` runs it once per row of `params`."""

    sql: str
    params: Sequence[Any] = ()
    many: bool = False


@dataclass(frozen=True, slots=True)
class Result:
    """What a statement returned: its rows (for SELECT or RETURNING) and the rows it changed."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    rowcount: int = 0

    def one(self) -> tuple[Any, ...] | None:
        """The first row, or None."""
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or None."""
        return self.rows[0][0] if self.rows else None


Script = Generator[Statement, Result, T]
"""A transaction script: yields statements, receives their results, returns a value."""

ScriptFactory = Callable[[Dialect], Script[T]]
"""Makes a script for a dialect: `lambda dialect: decide(approval_id, "approved")`."""


def drive_sync(execute: Callable[[Statement], Result], script: Script[T]) -> T:
    """Run `script` to its end, executing each statement it yields with `execute`."""
    try:
        statement = next(script)
        while True:
            statement = script.send(execute(statement))
    except StopIteration as stop:
        value: T = stop.value
        return value


async def drive_async(execute: Callable[[Statement], Awaitable[Result]], script: Script[T]) -> T:
    """Run `script` to its end, awaiting each statement it yields with `execute`."""
    try:
        statement = next(script)
        while True:
            statement = script.send(await execute(statement))
    except StopIteration as stop:
        value: T = stop.value
        return value
