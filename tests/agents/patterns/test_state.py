"""Namespaced shared state: each writer appends only under its own key; the owner merges."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.agents import Namespaces, NamespaceViolation
from corral.errors import UsageError

from .harness import steps_of


def test_a_writer_cannot_write_under_another_key() -> None:
    state = Namespaces(["billing", "shipping"])
    billing = state.writer("billing")
    billing.write("invoice 17 paid")
    with pytest.raises(NamespaceViolation, match="writer 'billing' cannot write under 'shipping'"):
        billing.write("overwritten!", key="shipping")
    with pytest.raises(NamespaceViolation, match="no namespace 'legal'"):
        billing.write("x", key="legal")
    assert state.snapshot() == {"billing": ["invoice 17 paid"], "shipping": []}
    assert billing.read("shipping") == []  # reading another's namespace is fine


def test_one_writer_per_namespace() -> None:
    state = Namespaces(["a"])
    state.writer("a")
    with pytest.raises(NamespaceViolation, match="already has a writer"):
        state.writer("a")
    with pytest.raises(NamespaceViolation, match="no namespace 'b'"):
        state.writer("b")
    with pytest.raises(UsageError, match="repeated: a"):
        Namespaces(["a", "a"])


def test_what_was_written_cannot_be_changed_behind_the_state() -> None:
    state = Namespaces(["a"])
    items = ["one"]
    writer = state.writer("a")
    writer.write(items)
    items.append("sneaky")
    writer.entries.append("also sneaky")
    state.snapshot()["a"].append("and this")
    assert state.read("a") == [["one"]]


def test_the_owner_declares_the_merge() -> None:
    def fill(state: Namespaces) -> Namespaces:
        a, b = state.writer("a"), state.writer("b")
        b.write(["b1", "b2"])
        a.write("a1")
        a.write(["a2"])
        return state

    assert fill(Namespaces(["a", "b"])).merged() == {"a": ["a1", ["a2"]], "b": [["b1", "b2"]]}
    assert fill(Namespaces(["a", "b"], merge="concat")).merged() == ["a1", "a2", "b1", "b2"]
    counted = fill(Namespaces(["a", "b"], merge=lambda c: {k: len(v) for k, v in c.items()}))
    assert counted.merged() == {"a": 2, "b": 1}
    with pytest.raises(UsageError, match="merge must be"):
        Namespaces(["a"], merge="last")  # type: ignore[arg-type]


async def research(topic: str) -> list[str]:
    await asyncio.sleep(0)  # a real suspension: the two branches interleave
    return [f"{topic} fact 1", f"{topic} fact 2"]


async def test_two_parallel_writers_cannot_clobber_each_other(corral: Corral) -> None:
    @corral.workflow
    async def gather_facts(ctx: RunContext, topics: list[str]) -> dict[str, Any]:
        state = Namespaces(topics, merge="concat")

        async def branch(topic: str, rival: str) -> str:
            writer = state.writer(topic)
            writer.write(await ctx.step(research, topic, name=f"research:{topic}"))
            try:
                writer.write(["clobbered"], key=rival)
            except NamespaceViolation as exc:
                return exc.code
            return "wrote"

        outcomes = await asyncio.gather(branch(topics[0], topics[1]), branch(topics[1], topics[0]))
        return {"outcomes": outcomes, "merged": state.merged(), "by_key": state.snapshot()}

    handle = await corral.start(gather_facts, ["tides", "moons"])
    await corral.run_until_idle()
    result = await handle.wait_for_result()
    assert result["outcomes"] == ["namespace_violation", "namespace_violation"]
    assert result["by_key"] == {
        "tides": [["tides fact 1", "tides fact 2"]],
        "moons": [["moons fact 1", "moons fact 2"]],
    }
    assert result["merged"] == ["tides fact 1", "tides fact 2", "moons fact 1", "moons fact 2"]
    assert await steps_of(corral, handle.run_id) == [
        ("research:tides", "succeeded"),
        ("research:moons", "succeeded"),
    ]
