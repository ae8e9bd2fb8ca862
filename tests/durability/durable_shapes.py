"""Workflow shapes as data: one generic workflow interprets a list of operations.

A shape is the run's input, so every suite (and hypothesis) makes new shapes without new code,
and a worker subprocess knows every shape by registering one workflow. Operations:

    {"op": "step", "v": 3}                      an idempotent tool step
    {"op": "amo", "v": 3}                       an at-most-once tool step
    {"op": "fanout", "vs": [1, 2]}              asyncio.gather of idempotent tool steps
    {"op": "child", "ops": [...]}               a child run of the same workflow, awaited
    {"op": "children", "shapes": [[...], ...]}  child runs gathered
    {"op": "sleep", "s": 0.2}                   a durable timer
    {"op": "signal", "name": "go"}              a wait for a signal

The output is one entry per operation, computable without running anything (`expected_output`),
so a run's result can be checked against the oracle as well as against a crash-free run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any

from corral import RunContext, StepInfo, current_step, workflow

from . import effect_ledger

Op = dict[str, Any]
WORKFLOW_NAME = "durable_shape"

StepHook = Callable[[StepInfo, str], Awaitable[None]]


class Hooks:
    """In-process instrumentation of step bodies (the property test counts and crashes here)."""

    on_step: StepHook | None = None
    delay: tuple[float, float] | None = None
    """Real seconds (min, max) a tool body takes: widens the windows a kill can land in."""


hooks = Hooks()


def signal_payload(name: str) -> dict[str, str]:
    """What the suites send for signal `name`: fixed, so results compare across databases."""
    return {"signal": name}


def tool_output(value: int) -> int:
    return value * 7 + 1


async def _tool(kind: effect_ledger.ToolKind, label: str, value: int) -> int:
    info = current_step()
    assert info is not None, "a tool runs inside a step body"
    epoch = info.lease_epoch  # tells executors of the same run apart
    if hooks.on_step is not None:
        await hooks.on_step(info, label)
    ledger = effect_ledger.current()
    execution = None if ledger is None else ledger.begin_execution(info.run_id, info.seq, epoch)
    # Half the delay before the call and half after its effect: a kill lands in either window.
    pause = 0.0 if hooks.delay is None else random.uniform(*hooks.delay) / 2
    try:
        if pause:
            await asyncio.sleep(pause)
        if ledger is not None:
            ledger.call(
                kind=kind,
                idempotency_key=info.idempotency_key,
                run_id=info.run_id,
                seq=info.seq,
                label=label,
                value=value,
                epoch=epoch,
                redelivered=info.redelivered,
            )
        if pause:
            await asyncio.sleep(pause)
        return tool_output(value)
    finally:
        if ledger is not None and execution is not None:
            ledger.end_execution(execution)


async def idempotent_tool(label: str, value: int) -> int:
    """A tool that deduplicates by idempotency key downstream: safe to call again."""
    return await _tool("idempotent", label, value)


async def at_most_once_tool(label: str, value: int) -> int:
    """A tool with no deduplication: calling it twice would apply it twice."""
    return await _tool("at_most_once", label, value)


@workflow(name=WORKFLOW_NAME)
async def durable_shape(ctx: RunContext, spec: Any) -> Any:
    """Interpret `spec["ops"]`; labels name each tool call's place in the shape."""
    out: list[Any] = []
    for index, op in enumerate(spec["ops"]):
        label = str(index)
        kind = op["op"]
        if kind == "step":
            out.append(await ctx.step(idempotent_tool, label, op["v"], name="tool"))
        elif kind == "amo":
            out.append(
                await ctx.step(at_most_once_tool, label, op["v"], name="amo", at_most_once=True)
            )
        elif kind == "fanout":
            steps: list[Awaitable[int]] = [
                ctx.step(idempotent_tool, f"{label}.{j}", v, name="tool")
                for j, v in enumerate(op["vs"])
            ]
            out.append(list(await asyncio.gather(*steps)))
        elif kind == "child":
            out.append(await ctx.run_child(durable_shape, {"ops": op["ops"]}))
        elif kind == "children":
            children = [ctx.run_child(durable_shape, {"ops": ops}) for ops in op["shapes"]]
            out.append(list(await asyncio.gather(*children)))
        elif kind == "sleep":
            await ctx.sleep(op["s"])
            out.append("slept")
        elif kind == "signal":
            out.append(await ctx.wait_for_signal(op["name"]))
        else:
            raise ValueError(f"unknown operation {kind!r}")
    return out


WORKFLOWS = (durable_shape,)


def expected_output(ops: list[Op]) -> list[Any]:
    """The oracle: what `durable_shape` returns for `ops`, crash or no crash."""
    out: list[Any] = []
    for op in ops:
        kind = op["op"]
        if kind in ("step", "amo"):
            out.append(tool_output(op["v"]))
        elif kind == "fanout":
            out.append([tool_output(v) for v in op["vs"]])
        elif kind == "child":
            out.append(expected_output(op["ops"]))
        elif kind == "children":
            out.append([expected_output(ops) for ops in op["shapes"]])
        elif kind == "sleep":
            out.append("slept")
        elif kind == "signal":
            out.append(signal_payload(op["name"]))
        else:
            raise ValueError(f"unknown operation {kind!r}")
    return out


def count_tool_steps(ops: list[Op]) -> int:
    """How many tool-step bodies a crash-free execution of `ops` runs (children included)."""
    total = 0
    for op in ops:
        kind = op["op"]
        if kind in ("step", "amo"):
            total += 1
        elif kind == "fanout":
            total += len(op["vs"])
        elif kind == "child":
            total += count_tool_steps(op["ops"])
        elif kind == "children":
            total += sum(count_tool_steps(ops) for ops in op["shapes"])
    return total


def count_runs(ops: list[Op]) -> int:
    """How many runs a shape makes: itself and its child runs, recursively."""
    total = 1
    for op in ops:
        if op["op"] == "child":
            total += count_runs(op["ops"])
        elif op["op"] == "children":
            total += sum(count_runs(ops) for ops in op["shapes"])
    return total


# -- named shapes for the crash-point matrix ---------------------------------------------------

SHAPES: dict[str, list[Op]] = {
    "sequence": [{"op": "step", "v": v} for v in (1, 2, 3, 4)],
    "fanout": [
        {"op": "step", "v": 1},
        {"op": "fanout", "vs": [2, 3, 4]},
        {"op": "step", "v": 5},
    ],
    "children": [
        {"op": "step", "v": 1},
        {
            "op": "children",
            "shapes": [
                [{"op": "step", "v": 2}, {"op": "step", "v": 3}],
                [{"op": "fanout", "vs": [4, 5]}],
            ],
        },
        {"op": "child", "ops": [{"op": "step", "v": 6}]},
        {"op": "step", "v": 7},
    ],
    "timer": [{"op": "step", "v": 1}, {"op": "sleep", "s": 0.2}, {"op": "step", "v": 2}],
    "signal": [
        {"op": "step", "v": 1},
        {"op": "signal", "name": "go"},
        {"op": "step", "v": 2},
    ],
    "at_most_once": [{"op": "amo", "v": 1}, {"op": "step", "v": 2}],
}


# -- random shapes for the soak ----------------------------------------------------------------


def random_shape(rng: random.Random, *, min_ops: int = 3, max_ops: int = 10) -> list[Op]:
    """A root shape of `min_ops`-`max_ops` operations: steps, fan-outs, children, short timers
    and signals (named `sig<index>`, which the soak sends as soon as it starts the run)."""
    ops: list[Op] = []
    for index in range(rng.randint(min_ops, max_ops)):
        roll = rng.random()
        if roll < 0.55:
            ops.append({"op": "step", "v": rng.randint(0, 99)})
        elif roll < 0.7:
            ops.append(
                {"op": "fanout", "vs": [rng.randint(0, 99) for _ in range(rng.randint(2, 4))]}
            )
        elif roll < 0.8:
            ops.append({"op": "child", "ops": _small_shape(rng)})
        elif roll < 0.85:
            ops.append({"op": "children", "shapes": [_small_shape(rng), _small_shape(rng)]})
        elif roll < 0.93:
            ops.append({"op": "sleep", "s": round(rng.uniform(0.05, 0.3), 3)})
        else:
            ops.append({"op": "signal", "name": f"sig{index}"})
    return ops


def _small_shape(rng: random.Random) -> list[Op]:
    ops: list[Op] = []
    for _ in range(rng.randint(1, 3)):
        if rng.random() < 0.75:
            ops.append({"op": "step", "v": rng.randint(0, 99)})
        else:
            ops.append({"op": "fanout", "vs": [rng.randint(0, 99) for _ in range(2)]})
    return ops


def root_signals(ops: list[Op]) -> list[str]:
    """Names of the signals a root shape waits for, in order."""
    return [op["name"] for op in ops if op["op"] == "signal"]
