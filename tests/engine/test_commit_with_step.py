"""`commit_with_step`: a step's record (an audit entry) commits with the step's outcome."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.engine import commit_with_step
from corral.errors import StepFailed, UsageError
from corral.store.scripts import Dialect, Script, Statement

TABLE = "CREATE TABLE IF NOT EXISTS step_notes (note TEXT NOT NULL UNIQUE)"


def setup(dialect: Dialect) -> Script[None]:
    yield Statement(TABLE)


def note(text: str) -> Any:
    def script(dialect: Dialect) -> Script[None]:
        yield Statement("INSERT INTO step_notes (note) VALUES (?)", (text,))

    return script


def notes() -> Script[list[str]]:
    result = yield Statement("SELECT note FROM step_notes ORDER BY note")
    return [row[0] for row in result.rows]


async def test_records_commit_with_success_and_with_failure(corral: Corral) -> None:
    await corral.store.run_script(setup)

    async def decide_and_succeed() -> str:
        commit_with_step(note("allowed"))
        return "ok"

    async def decide_and_fail() -> None:
        commit_with_step(note("denied"))
        raise ValueError("no")

    @corral.workflow
    async def flow(ctx: RunContext) -> str:
        with contextlib.suppress(StepFailed):
            await ctx.step(decide_and_fail, name="fail")
        return await ctx.step(decide_and_succeed, name="succeed")

    handle = await corral.start(flow)
    await corral.run_until_idle()
    assert await handle.wait_for_result() == "ok"
    assert await corral.store.read_script(lambda d: notes()) == ["allowed", "denied"]
    assert [(r.name, r.status) for r in await corral.journal(handle.run_id)] == [
        ("fail", "failed"),
        ("succeed", "succeeded"),
    ]


async def test_a_record_that_cannot_commit_fails_the_write_with_it(corral: Corral) -> None:
    await corral.store.run_script(setup)
    await corral.store.run_script(note("taken"))

    async def clashes() -> str:
        commit_with_step(note("taken"))  # UNIQUE: the record cannot be written
        return "ran"

    @corral.workflow
    async def flow(ctx: RunContext) -> str:
        return await ctx.step(clashes, name="clash")

    handle = await corral.start(flow)
    await corral.run_until_idle()
    run = await corral.get_run(handle.run_id)
    assert run.status != "succeeded"
    outcomes = [r.status for r in await corral.journal(handle.run_id) if r.name == "clash"]
    assert "succeeded" not in outcomes  # the outcome did not commit without its record


def test_outside_a_step_it_is_an_error() -> None:
    with pytest.raises(UsageError, match="step bodies"):
        commit_with_step(note("x"))
