"""Workflows: typed inputs and outputs, names, versions, references, idempotent starts."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from pydantic import BaseModel, Field

from corral import (
    Corral,
    InvalidInput,
    RunContext,
    RunFailed,
    RunHandle,
    UnknownWorkflow,
    UsageError,
    Workflow,
    workflow,
)
from corral.store import Store, open_store
from corral.testing import FakeClock

from .harness import Calls, error_of


class OrderIn(BaseModel):
    customer: str
    amount: int = Field(gt=0)


class OrderOut(BaseModel):
    customer: str
    charged: int


@dataclasses.dataclass
class Point:
    x: int
    y: int


# Targets of `module:function` references; `__name__` is this module's import name however
# pytest imported it, so the references below resolve to these very functions.
REFERENCE_CALLS = Calls()


async def referenced_plain(ctx: RunContext, inp: OrderIn) -> OrderOut:
    REFERENCE_CALLS.hit("plain")
    return OrderOut(customer=inp.customer, charged=inp.amount)


@workflow(name="referenced-decorated", version="3")
async def referenced_decorated(ctx: RunContext, n: int) -> int:
    REFERENCE_CALLS.hit("decorated")
    return n + 1


NOT_A_WORKFLOW = 42


async def test_typed_input_and_output(corral: Corral) -> None:
    seen: list[object] = []

    @corral.workflow
    async def order(ctx: RunContext, inp: OrderIn) -> OrderOut:
        seen.append(inp)
        return OrderOut(customer=inp.customer, charged=inp.amount)

    from_model = await corral.start(order, OrderIn(customer="ada", amount=5))
    from_dict = await corral.start(order, {"customer": "bob", "amount": 6})
    from_json = await corral.start(order, '{"customer": "cy", "amount": 7}')
    await corral.run_until_idle()

    assert await from_model.wait_for_result(timeout=5) == OrderOut(customer="ada", charged=5)
    assert await from_dict.wait_for_result(timeout=5) == OrderOut(customer="bob", charged=6)
    assert await from_json.wait_for_result(timeout=5) == OrderOut(customer="cy", charged=7)
    assert all(isinstance(x, OrderIn) for x in seen)
    run = await from_dict.get()
    assert json.loads(run.input) == {"customer": "bob", "amount": 6}
    assert json.loads(run.result or "null") == {"customer": "bob", "charged": 6}

    # A handle made from a bare run id decodes with the registered workflow's output type.
    assert await corral.handle(from_dict.run_id).wait_for_result(timeout=5) == OrderOut(
        customer="bob", charged=6
    )


async def test_dataclass_input(corral: Corral) -> None:
    @corral.workflow
    async def norm(ctx: RunContext, p: Point) -> int:
        assert isinstance(p, Point)
        return abs(p.x) + abs(p.y)

    handle = await corral.start(norm, Point(3, -4))
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == 7


async def test_str_input_is_the_string_itself(corral: Corral) -> None:
    """`corral.start(greet, "Ada")`, the example in `Corral`'s docstring, must work."""

    @corral.workflow
    async def greet(ctx: RunContext, name: str) -> str:
        return f"hello {name}"

    handle = await corral.start(greet, "Ada")
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "hello Ada"


async def test_input_failing_its_schema_names_the_field(corral: Corral) -> None:
    @corral.workflow
    async def order(ctx: RunContext, inp: OrderIn) -> OrderOut:
        raise AssertionError("never runs")

    with pytest.raises(InvalidInput) as info:
        await corral.start(order, {"customer": "ada", "amount": "lots"})
    assert "amount" in info.value.message
    assert "OrderIn" in info.value.message
    assert info.value.ids == {"workflow": "order"}

    with pytest.raises(InvalidInput, match="amount"):
        await corral.start(order, {"customer": "ada", "amount": 0})  # fails gt=0
    with pytest.raises(InvalidInput, match="customer"):
        await corral.start(order, {"amount": 1})
    assert await corral.list_runs() == []  # nothing was started


async def test_untyped_input_must_be_json(corral: Corral) -> None:
    @corral.workflow
    async def anything(ctx, inp):  # type: ignore[no-untyped-def]
        return inp

    handle = await corral.start(anything, {"a": [1, 2]})
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == {"a": [1, 2]}
    # A str is a value; JSON text comes as bytes (as the CLI and the API pass it).
    assert (await corral.start(anything, "{not json")).created
    with pytest.raises(InvalidInput, match="not valid JSON"):
        await corral.start(anything, b"{not json")


async def test_idempotency_key_returns_the_same_run(corral: Corral) -> None:
    calls = Calls()

    @corral.workflow
    async def order(ctx: RunContext, inp: OrderIn) -> OrderOut:
        calls.hit(inp.customer)
        return OrderOut(customer=inp.customer, charged=inp.amount)

    first = await corral.start(order, {"customer": "ada", "amount": 5}, idempotency_key="o-1")
    again = await corral.start(order, {"customer": "ada", "amount": 5}, idempotency_key="o-1")
    other = await corral.start(order, {"customer": "bob", "amount": 5}, idempotency_key="o-2")
    assert first.created
    assert not again.created
    assert other.created
    assert again.run_id == first.run_id != other.run_id

    await corral.run_until_idle()
    late = await corral.start(order, {"customer": "ada", "amount": 5}, idempotency_key="o-1")
    assert (late.created, late.run_id) == (False, first.run_id)
    assert calls == {"ada": 1, "bob": 1}
    assert len(await corral.list_runs()) == 2


async def test_unknown_workflow(corral: Corral) -> None:
    @corral.workflow
    async def known(ctx: RunContext, _: None) -> None:
        return None

    with pytest.raises(UnknownWorkflow) as info:
        await corral.start("nope")
    assert info.value.ids == {"workflow": "nope"}
    assert "known" in info.value.message  # lists what is registered


async def test_workflow_failure_fails_the_run(corral: Corral) -> None:
    @corral.workflow
    async def broken(ctx: RunContext, _: None) -> None:
        raise KeyError("missing")

    handle = await corral.start(broken)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert (error["code"], error["type"]) == ("exception", "KeyError")
    assert "KeyError" in error["traceback"]
    with pytest.raises(RunFailed) as info:
        await handle.wait_for_result(timeout=5)
    assert info.value.ids == {
        "run_id": handle.run_id,
        "status": "failed",
        "error_code": "exception",
    }


async def test_non_serializable_output_fails_the_run(corral: Corral) -> None:
    @corral.workflow
    async def leaky(ctx: RunContext, _: None):  # type: ignore[no-untyped-def]
        return object()

    handle = await corral.start(leaky)
    await corral.run_until_idle()
    error = error_of(await handle.get())
    assert error["code"] == "not_serializable"
    assert "leaky" in error["message"]
    assert error["value_type"] == "object"


async def test_module_function_references(corral: Corral) -> None:
    REFERENCE_CALLS.clear()
    plain_ref = f"{__name__}:referenced_plain"
    decorated_ref = f"{__name__}:referenced_decorated"

    plain: RunHandle[Any] = await corral.start(plain_ref, {"customer": "ada", "amount": 3})
    decorated: RunHandle[Any] = await corral.start(decorated_ref, 1)
    await corral.run_until_idle()

    assert await plain.wait_for_result(timeout=5) == OrderOut(customer="ada", charged=3)
    assert await decorated.wait_for_result(timeout=5) == 2
    plain_run, decorated_run = await plain.get(), await decorated.get()
    # The run keeps the reference as its workflow name, so any worker can import it.
    assert (plain_run.workflow, plain_run.workflow_version) == (plain_ref, "1")
    assert (decorated_run.workflow, decorated_run.workflow_version) == (decorated_ref, "3")
    assert REFERENCE_CALLS == {"plain": 1, "decorated": 1}


async def test_a_worker_imports_a_referenced_workflow_on_demand(
    corral: Corral, db_url: str, clock: FakeClock
) -> None:
    REFERENCE_CALLS.clear()
    handle: RunHandle[Any] = await corral.start(f"{__name__}:referenced_decorated", 10)

    # Another process: nothing registered, same database.
    async with Corral(store=open_store(db_url), clock=clock) as other:
        assert other.workflows.names() == []
        await other.run_until_idle()
        assert await other.handle(handle.run_id).wait_for_result(timeout=5) == 11
    assert REFERENCE_CALLS == {"decorated": 1}


@pytest.mark.parametrize(
    ("reference", "message"),
    [
        ("no_such_module_xyz:flow", "cannot import module"),
        (f"{__name__}:no_such_function", "has no"),
        (f"{__name__}:NOT_A_WORKFLOW", "not a workflow"),
    ],
)
async def test_bad_references(corral: Corral, reference: str, message: str) -> None:
    with pytest.raises(UnknownWorkflow, match=message) as info:
        await corral.start(reference)
    assert info.value.ids == {"workflow": reference}


async def test_a_run_of_a_workflow_this_worker_does_not_know_is_released(
    corral: Corral, db_url: str, clock: FakeClock
) -> None:
    @corral.workflow(name="billing.invoice")
    async def invoice(ctx: RunContext, n: int) -> int:
        return n

    handle = await corral.start(invoice, 1)
    async with Corral(store=open_store(db_url), clock=clock) as stranger:
        stats = await stranger.run_until_idle()
    assert stats.outcomes == {"released": 1}
    run = await handle.get()
    assert (run.status, run.lease_owner) == ("pending", None)
    assert run.wake_at is not None
    assert run.wake_at > clock.now()

    clock.advance(run.wake_at - clock.now())
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == 1


async def test_a_run_of_another_version_is_released(
    corral: Corral, db_url: str, clock: FakeClock
) -> None:
    @corral.workflow(name="report", version="2")
    async def report_v2(ctx: RunContext, _: None) -> str:
        return "v2"

    handle = await corral.start(report_v2)
    async with Corral(store=open_store(db_url), clock=clock) as old_worker:

        @old_worker.workflow(name="report", version="1")
        async def report_v1(ctx: RunContext, _: None) -> str:
            return "v1"

        stats = await old_worker.run_until_idle()
    assert stats.outcomes == {"released": 1}
    assert (await handle.get()).status == "pending"


def test_workflow_decorator_checks_the_signature() -> None:
    def not_async(ctx: RunContext, x: int) -> int:
        return x

    async def too_many(ctx: RunContext, a: int, b: int) -> int:
        return a + b

    with pytest.raises(UsageError, match="async def"):
        workflow(not_async)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="takes 3"):
        workflow(too_many)  # type: ignore[arg-type]


async def test_workflow_without_input(corral: Corral) -> None:
    @corral.workflow
    async def no_input(ctx: RunContext) -> str:
        return "ok"

    handle = await corral.start(no_input)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "ok"


def test_two_workflows_with_one_name_and_version_are_refused(store: Store) -> None:
    corral = Corral(store=store)

    @corral.workflow(name="dup")
    async def first(ctx: RunContext, _: None) -> None:
        return None

    with pytest.raises(UsageError, match="dup"):

        @corral.workflow(name="dup")
        async def second(ctx: RunContext, _: None) -> None:
            return None

    # A new version of the same name replaces the known one for new runs.
    @corral.workflow(name="dup", version="2")
    async def third(ctx: RunContext, _: None) -> None:
        return None

    resolved = corral.workflows.resolve("dup")
    assert isinstance(resolved, Workflow)
    assert resolved.version == "2"
