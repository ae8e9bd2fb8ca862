"""What the engine tests share: call counters, a simulated crash, bounded waits, run errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg
from psycopg import sql

from corral import Corral
from corral.store import PostgresStore, RunRecord, SQLiteStore, Store


class Crash(BaseException):
    """Stands for the worker process dying at this point: nothing in the engine catches it.

    A `BaseException`, like the engine's own control flow, so no `except Exception` swallows it;
    the run is left `running` under a lease nobody renews, as after a SIGKILL.
    """


class Calls(Counter[str]):
    """How many times each step body ran; durability tests assert every count stays at one."""

    def hit(self, name: str) -> None:
        self[name] += 1


def error_of(run: RunRecord) -> dict[str, Any]:
    """The stored error of a run, decoded."""
    assert run.error is not None, f"run {run.run_id} ({run.status}) has no error"
    data: dict[str, Any] = json.loads(run.error)
    return data


async def eventually(
    predicate: Callable[[], Awaitable[bool]],
    *,
    timeout: float = 5.0,
    what: str = "condition",
    tick: Callable[[], None] | None = None,
) -> None:
    """Wait until `predicate()` holds, with a deadline.

    Only for outcomes of a worker running as a task, which a real writer thread commits: there is
    no event to await for them. Everything else in these suites uses barriers and `FakeClock`.
    `tick` runs between polls, e.g. to let virtual time flow for a worker that may have parked on
    the clock just after the test last moved it.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await predicate():
        if loop.time() >= deadline:
            raise AssertionError(f"{what} did not hold within {timeout}s")
        if tick is not None:
            tick()
        await asyncio.sleep(0.002)


async def wait_for_status(
    corral: Corral,
    run_id: str,
    status: str,
    *,
    timeout: float = 5.0,
    tick: Callable[[], None] | None = None,
) -> None:
    async def reached() -> bool:
        return (await corral.get_run(run_id)).status == status

    await eventually(reached, timeout=timeout, what=f"run {run_id} is {status}", tick=tick)


async def backdate_lease(store: Store, run_id: str, seconds: float) -> None:
    """Move a run's lease expiry `seconds` into the past, in SQL, instead of sleeping past it.

    Runs in a thread: the UPDATE may wait for a row lock held by this very process's writer,
    which needs the event loop to commit.
    """
    await asyncio.to_thread(_backdate_lease, store, run_id, seconds)


def _backdate_lease(store: Store, run_id: str, seconds: float) -> None:
    if isinstance(store, SQLiteStore):
        with contextlib.closing(sqlite3.connect(store.path, isolation_level=None)) as conn:
            conn.execute(
                "UPDATE runs SET lease_expires_at = lease_expires_at - ? WHERE run_id = ?",
                (seconds, run_id),
            )
        return
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.conninfo, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "UPDATE {}.runs SET lease_expires_at = lease_expires_at - %s WHERE run_id = %s"
                ).format(sql.Identifier(store.schema)),
                (seconds, run_id),
            )
        return
    raise NotImplementedError(f"backdate_lease: no SQL for {type(store).__name__} yet")
