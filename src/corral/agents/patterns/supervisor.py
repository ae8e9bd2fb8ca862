"""Supervisor and workers: tasks given out in parallel as child runs, results kept by their key.

Two ways to supervise in Corral:

- **An LLM supervisor** is an `Agent` with `delegates=[...]`: its model decides which workers to
  ask, with what sub-task, and what to do with the answers (`ask_<name>` tools; several asked in
  one turn run in parallel, each as a child run). Use it when the split of the work depends on
  the input and needs judgement.
- **`fan_out`** is the same shape with no model in the middle: the workflow code names the tasks,
  every task is a child run started before any is awaited, and `merge` declares how the results
  combine. Use it when the split is known in advance; it costs no model call to plan.

```python
results = await fan_out(ctx, {
    "billing": (billing_agent, "Is invoice 17 paid?"),
    "shipping": (shipping_agent, "Where is parcel 9?"),
})
results["billing"]  # the billing agent's output
```

Each task's journal is its own child run's; the parent's journal reads: every `child.start`,
then every `child.result`, in task order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, TypeVar, overload

from pydantic import BaseModel

from corral.agents.agent import Agent
from corral.agents.patterns.state import Namespaces
from corral.agents.patterns.targets import check_target, child_input, target_label
from corral.engine import ChildHandle, RunContext, Runnable
from corral.errors import AgentDefinitionError, ChildRunFailed

T = TypeVar("T")

OnError = Literal["raise", "collect"]


class TaskFailed(BaseModel):
    """In `fan_out(..., on_error="collect")` results, what stands for a task whose run failed."""

    key: str
    child_run_id: str
    workflow: str
    code: str | None = None
    """The error code of the child run's failure (`turn_limit`, `step_failed`, …)."""
    message: str


@overload
async def fan_out(
    ctx: RunContext,
    tasks: Mapping[str, tuple[Agent[Any] | Runnable, Any]],
    *,
    merge: None = None,
    on_error: OnError = "raise",
) -> dict[str, Any]: ...
@overload
async def fan_out(
    ctx: RunContext,
    tasks: Mapping[str, tuple[Agent[Any] | Runnable, Any]],
    *,
    merge: Callable[[dict[str, Any]], T],
    on_error: OnError = "raise",
) -> T: ...
async def fan_out(
    ctx: RunContext,
    tasks: Mapping[str, tuple[Agent[Any] | Runnable, Any]],
    *,
    merge: Callable[[dict[str, Any]], Any] | None = None,
    on_error: OnError = "raise",
) -> Any:
    """Run every task as a child run, in parallel, and return the results by key.

    All the child runs are started (each a `child.start` step) before any is awaited (each a
    `child.result` step), so they run at the same time on as many workers as there are. Each
    key is a namespace: its task's result is kept under it and nowhere else, whatever order the
    tasks finish in.

    Args:
        ctx: The run context of the workflow giving out the tasks.
        tasks: key → (agent or runnable, its input). An agent gets the input as its task.
        merge: How the results combine: called with `{key: result}` (in task order); its return
            value is what `fan_out` returns. None returns the dict.
        on_error: `"raise"`: once every task has finished, raise `ChildRunFailed` for the first
            failed task (in task order), naming its key. `"collect"`: put a `TaskFailed` under
            the key of each failed task, and return normally.

    Raises:
        ChildRunFailed: A task's run failed (with `on_error="raise"`); its `key` names the task.
        AgentDefinitionError: A task is not a (target, input) pair, or the options are wrong.
    """
    if on_error not in ("raise", "collect"):
        raise AgentDefinitionError(
            f"fan_out: on_error must be 'raise' or 'collect', not {on_error!r}"
        )
    for key, task in tasks.items():
        if not (isinstance(task, tuple) and len(task) == 2):
            raise AgentDefinitionError(
                f"fan_out: task {key!r} must be a (target, input) pair, not {task!r}", key=key
            )
        check_target(task[0], where=f"fan_out task {key!r}")
    keys = list(tasks)
    # Start every child before awaiting any: each start takes its step number when called.
    handles: list[ChildHandle] = await asyncio.gather(
        *(ctx.start_child(target, child_input(target, value)) for target, value in tasks.values())
    )
    state = Namespaces(keys)
    waits = [
        _settle(handle.result(), state.writer(key).write)
        for key, handle in zip(keys, handles, strict=True)
    ]
    failures = await asyncio.gather(*waits)
    results: dict[str, Any] = {}
    for key, handle, failure in zip(keys, handles, failures, strict=True):
        if failure is None:
            results[key] = state.read(key)[0]
            continue
        if on_error == "raise":
            raise ChildRunFailed(
                f"fan_out task {key!r} ({target_label(tasks[key][0])}, child run "
                f"{handle.run_id}) failed: {failure.message}",
                key=key,
                run_id=ctx.run_id,
                child_run_id=handle.run_id,
                error_code=failure.ids.get("error_code"),
            )
        results[key] = TaskFailed(
            key=key,
            child_run_id=handle.run_id,
            workflow=handle.workflow.name,
            code=failure.ids.get("error_code"),
            message=failure.message,
        )
    return merge(results) if merge is not None else results


async def _settle(result: Awaitable[Any], write: Callable[[Any], None]) -> ChildRunFailed | None:
    """Wait for one child; write its result in its namespace, or return its failure (so every
    child is awaited, and the journal holds every result, before any failure is raised)."""
    try:
        value = await result
    except ChildRunFailed as exc:
        return exc
    write(value)
    return None
