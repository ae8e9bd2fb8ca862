"""Transaction scripts: one SQL script, run atomically by either backend (both in this suite)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import psycopg
import pytest
from psycopg import sql

from corral import Corral, RunContext
from corral.errors import StoreError, UsageError
from corral.store import Store, open_store
from corral.store.postgresql import parse_postgres_url
from corral.store.scripts import Dialect, Result, Script, Statement

TABLE = "CREATE TABLE IF NOT EXISTS script_test (k TEXT PRIMARY KEY, v INTEGER NOT NULL)"


def setup(dialect: Dialect) -> Script[None]:
    yield Statement(TABLE)


def put(key: str, value: int) -> Script[int]:
    result = yield Statement(
        "INSERT INTO script_test (k, v) VALUES (?, ?) ON CONFLICT (k) DO NOTHING", (key, value)
    )
    return result.rowcount


def put_many_then_fail(rows: list[tuple[str, int]]) -> Script[None]:
    yield Statement("INSERT INTO script_test (k, v) VALUES (?, ?)", rows, many=True)
    raise UsageError("changed my mind")


def total() -> Script[tuple[int, list[str]]]:
    result: Result = yield Statement("SELECT coalesce(sum(v), 0) FROM script_test")
    keys = yield Statement("SELECT k FROM script_test ORDER BY k")
    return int(result.scalar()), [row[0] for row in keys.rows]


def bump_if(key: str, expected: int) -> Script[bool]:
    """Compare-and-set: exactly one of many concurrent bumps from the same value wins."""
    result = yield Statement(
        "UPDATE script_test SET v = v + 1 WHERE k = ? AND v = ?", (key, expected)
    )
    return result.rowcount == 1


async def test_a_script_commits_its_statements_and_returns_its_value(store: Store) -> None:
    await store.run_script(setup)
    assert await store.run_script(lambda d: put("a", 1)) == 1
    assert await store.run_script(lambda d: put("a", 5)) == 0  # ON CONFLICT DO NOTHING
    assert await store.read_script(lambda d: total()) == (1, ["a"])


async def test_a_script_that_raises_leaves_nothing_and_spares_its_batch(store: Store) -> None:
    await store.run_script(setup)
    outcomes = await asyncio.gather(
        store.run_script(lambda d: put("b", 2)),
        store.run_script(lambda d: put_many_then_fail([("x", 1), ("y", 2)])),
        store.run_script(lambda d: put("c", 3)),
        return_exceptions=True,
    )
    assert outcomes[0] == 1
    assert outcomes[2] == 1
    assert isinstance(outcomes[1], UsageError)
    assert await store.read_script(lambda d: total()) == (5, ["b", "c"])


async def test_a_failing_statement_is_a_store_error(store: Store) -> None:
    await store.run_script(setup)
    await store.run_script(lambda d: put("k", 1))

    def duplicate(dialect: Dialect) -> Script[None]:
        yield Statement("INSERT INTO script_test (k, v) VALUES ('k', 2)")

    with pytest.raises(StoreError):
        await store.run_script(duplicate)
    assert await store.read_script(lambda d: total()) == (1, ["k"])


async def test_concurrent_compare_and_set_has_one_winner(store: Store) -> None:
    await store.run_script(setup)
    await store.run_script(lambda d: put("gate", 0))
    wins = await asyncio.gather(
        *(store.run_script(lambda d: bump_if("gate", 0)) for _ in range(50))
    )
    assert wins.count(True) == 1
    assert await store.read_script(lambda d: total()) == (1, ["gate"])


async def test_scripts_know_their_dialect(store: Store, backend: str) -> None:
    seen: list[str] = []

    def which(dialect: Dialect) -> Script[None]:
        seen.append(dialect)
        yield Statement("SELECT 1")

    await store.run_script(which)
    assert seen == [backend]


async def test_a_guarded_signal_is_sent_with_its_script_or_not_at_all(corral: Corral) -> None:
    @corral.workflow
    async def waits(ctx: RunContext) -> Any:
        return await ctx.wait_for_signal("go")

    await corral.store.run_script(setup)
    await corral.store.run_script(lambda d: put("gate", 0))
    handle = await corral.start(waits)
    await corral.run_until_idle()

    def decide(dialect: Dialect) -> Script[None]:
        won = yield from bump_if("gate", 0)
        if not won:
            raise UsageError("already decided")

    outcomes = await asyncio.gather(
        *(corral.signal(handle.run_id, "go", n, guard=decide) for n in range(20)),
        return_exceptions=True,
    )
    sent = [o for o in outcomes if not isinstance(o, BaseException)]
    assert len(sent) == 1
    assert all(isinstance(o, UsageError) for o in outcomes if o not in sent)
    assert len(await corral.store.list_signals(handle.run_id)) == 1
    await corral.run_until_idle()
    assert await handle.wait_for_result() == json.loads(sent[0].payload)


def lock_both(first: str, second: str, dialect: Dialect) -> Script[None]:
    """Lock two rows in the given order (PostgreSQL: FOR UPDATE), then change both."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    yield Statement(f"SELECT v FROM script_test WHERE k = ?{lock}", (first,))
    yield Statement(f"SELECT v FROM script_test WHERE k = ?{lock}", (second,))
    yield Statement("UPDATE script_test SET v = v + 1 WHERE k IN (?, ?)", (first, second))


@pytest.mark.parametrize("backend", ["postgresql"])  # SQLite has one writer: no row locks
async def test_a_script_chosen_as_a_deadlock_victim_is_retried(db_url: str) -> None:
    """Another transaction locks rows in the opposite order: PostgreSQL aborts one of the two
    (the store's, which waited first); the store tries it again and it commits once."""
    store = open_store(db_url)
    await store.open()
    try:
        await store.run_script(setup)
        await store.run_script(lambda d: put("x", 0))
        await store.run_script(lambda d: put("y", 0))
        conninfo, schema = parse_postgres_url(db_url)
        async with await psycopg.AsyncConnection.connect(conninfo) as other:
            await other.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            await other.execute("SELECT v FROM script_test WHERE k = 'x' FOR UPDATE")
            script = asyncio.create_task(store.run_script(lambda d: lock_both("y", "x", d)))
            await asyncio.sleep(0.3)  # the script holds y and waits for x
            try:
                await other.execute("SELECT v FROM script_test WHERE k = 'y' FOR UPDATE")
                await other.execute("UPDATE script_test SET v = v + 10 WHERE k = 'x'")
                await other.commit()
            except psycopg.errors.DeadlockDetected:
                await other.rollback()  # this side was the victim: the script just proceeds
            await asyncio.wait_for(script, 30)
        x_and_y = await store.read_script(lambda d: total())
        assert x_and_y[0] in (2, 12)  # the script's +1 on each row, once; maybe the other's +10
    finally:
        await store.close()
