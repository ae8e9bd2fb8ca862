"""A worker at full concurrency must keep its event loop turning when it is woken.

A worker with every slot taken can be woken (a run it executes starts a child run, or this
process starts a run or sends a signal) while it has nothing to claim. It must wait, not spin:
a loop that never yields starves every run it holds (no step, no heartbeat, so its leases expire
under it) and ignores SIGTERM, at 100% CPU, for ever. Found by the crash-point matrix.

The scenario runs in a subprocess with a deadline, because a starved event loop cannot time
itself out.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCENARIO = textwrap.dedent(
    """
    import asyncio, sys
    from corral import Corral, RunContext, workflow

    async def one() -> int:
        return 1

    @workflow
    async def child(ctx: RunContext, _: None) -> int:
        return await ctx.step(one)

    @workflow
    async def parent(ctx: RunContext, _: None) -> int:
        return await ctx.run_child(child, None)

    async def main() -> None:
        async with Corral(sys.argv[1], workflows=[parent, child]) as corral:
            handle = await corral.start(parent, None)
            await corral.run_until_idle(concurrency=int(sys.argv[2]))
            print(await handle.wait_for_result(timeout=5))

    asyncio.run(main())
    """
)


def test_a_full_worker_whose_run_starts_a_child_finishes(tmp_path: Path) -> None:
    concurrency = 1  # the parent takes the only slot, then starts its child
    url = f"sqlite:///{tmp_path.resolve() / 'corral.db'}"
    try:
        done = subprocess.run(
            [sys.executable, "-c", SCENARIO, url, str(concurrency)],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(
            f"run_until_idle(concurrency={concurrency}) hung: does the worker spin in "
            "Worker.run while every slot is taken and its wake-up event is set?"
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"
