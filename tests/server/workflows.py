"""Workflows the API tests start: a greeting, and one that waits for a signal."""

from __future__ import annotations

from typing import Any

from corral import RunContext, workflow


@workflow
async def greet(ctx: RunContext, name: str) -> str:
    return f"hello {name}"


@workflow
async def wait_for_go(ctx: RunContext, order: str) -> Any:
    """Waits for the signal `go` and returns what it carried."""
    data = await ctx.wait_for_signal("go")
    return {"order": order, "go": data}


WORKFLOWS = [greet, wait_for_go]
