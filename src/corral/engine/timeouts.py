"""Racing work against the engine's clock: the one way Corral enforces a timeout.

The clock is the injected one, so a test drives timeouts with `FakeClock.advance` and never
sleeps. Work that does not finish in time is cancelled and *abandoned*: the caller gets its
answer at the limit even if the work ignores the cancellation (a tool swallowing
`CancelledError`, a function running in a thread, which Python cannot stop).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import Any, TypeVar

from corral.engine.clock import Clock

T = TypeVar("T")


class TimedOut(Exception):
    """The work passed its limit; callers turn this into the error that names what timed out."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def within(clock: Clock, seconds: float, work: Awaitable[T]) -> T:
    """`await work`, or raise `TimedOut` once `seconds` have passed on `clock`."""
    task = asyncio.ensure_future(work)
    if seconds <= 0:
        _abandon(task)
        raise TimedOut(seconds)
    timer = asyncio.ensure_future(clock.sleep(seconds))
    try:
        await asyncio.wait({task, timer}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        # Our caller was cancelled (or the run is unloading): take the work down with it.
        timer.cancel()
        _abandon(task)
        raise
    if task.done():
        timer.cancel()
        return task.result()
    _abandon(task)
    raise TimedOut(seconds)


def _abandon(task: asyncio.Future[T]) -> None:
    """Cancel `task` without waiting for it; its late outcome is retrieved and dropped."""
    task.cancel()
    task.add_done_callback(_drop_outcome)


def _drop_outcome(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        task.exception()


__all__ = ["TimedOut", "within"]
