"""LISTEN/NOTIFY really wakes workers: a worker that polls once a minute still starts, within
seconds, a run another `Corral` (another process, in production) created or signalled."""

from __future__ import annotations

import asyncio

import pytest

from corral import Corral, RunContext, workflow


@workflow(name="wait_then_answer")
async def wait_then_answer(ctx: RunContext, question: str) -> str:
    answer = await ctx.wait_for_signal("answer")
    return f"{question} {answer}"


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
async def test_a_notification_wakes_a_worker_long_before_its_next_poll(db_url: str) -> None:
    async with (
        Corral(db_url, workflows=[wait_then_answer], poll_interval=60.0) as server_side,
        Corral(db_url, workflows=[wait_then_answer]) as client_side,
    ):
        worker = server_side.worker(concurrency=4)
        task = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(0.2)  # the worker has polled once and now waits up to 60 s
            handle = await client_side.start(wait_then_answer, "six times seven?")

            async def waiting() -> None:
                # The status lives in the database, written by the other instance's worker.
                while await handle.status() != "waiting":  # noqa: ASYNC110
                    await asyncio.sleep(0.02)

            await asyncio.wait_for(waiting(), timeout=10)  # woken by NOTIFY, not by polling
            await client_side.signal(handle.run_id, "answer", 42)
            assert await handle.wait_for_result(timeout=10) == "six times seven? 42"
        finally:
            worker.stop()
            await task
