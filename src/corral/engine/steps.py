"""The `@step` decorator: a function that journals itself when a workflow calls it."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar, overload

from corral.engine.context import current_context, current_step
from corral.engine.retries import RetryRule

P = ParamSpec("P")
T = TypeVar("T")


@overload
def step(fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]: ...
@overload
def step(
    *,
    name: str | None = None,
    at_most_once: bool = False,
    retry: RetryRule | None = None,
    timeout: float | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]: ...
def step(
    fn: Callable[P, Awaitable[T]] | None = None,
    /,
    *,
    name: str | None = None,
    at_most_once: bool = False,
    retry: RetryRule | None = None,
    timeout: float | None = None,
) -> Any:
    """Make an `async def` function a durable step.

    Called from workflow code, it runs as `ctx.step(fn, ...)` would: journaled, replayed, with an
    idempotency key, retried by `retry` and abandoned after `timeout` seconds. Called from inside
    another step's body, or outside any run, it is a plain call (a step's body is one unit; its
    inner calls are not journaled separately).
    """

    def decorate(inner: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
        if not inspect.iscoroutinefunction(inner):
            raise TypeError(f"@step needs an `async def` function; {inner.__qualname__} is not")
        step_name = name or inner.__qualname__

        @functools.wraps(inner)
        def call(*args: P.args, **kwargs: P.kwargs) -> Awaitable[T]:
            ctx = current_context()
            if ctx is None or current_step() is not None:
                return inner(*args, **kwargs)
            return ctx.call_step(
                inner,
                args,
                kwargs,
                name=step_name,
                at_most_once=at_most_once,
                retry=retry,
                timeout=timeout,
            )

        return call

    if fn is not None:
        return decorate(fn)
    return decorate
