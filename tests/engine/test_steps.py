"""Steps: journaled once, replayed from the journal, typed, failing and redelivered durably."""

# Only until RunContext.step types `ctx.step(async_fn)`: its `Callable[..., Awaitable[T]] |
# Callable[..., T]` parameter makes mypy infer T as Never (test_typing.py pins the bug).

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading

import pytest
from pydantic import BaseModel

from corral import (
    Corral,
    NotSerializable,
    RunContext,
    StepFailed,
    current_step,
    step,
)
from corral.engine import execute_run
from corral.store import StepWrite, Store
from corral.testing import FakeClock

from .harness import Calls, Crash, error_of, eventually


class Receipt(BaseModel):
    charge_id: str
    amount: int


@dataclasses.dataclass
class Parcel:
    weight: float
    tags: list[str]


async def test_step_body_runs_once_when_the_run_replays(corral: Corral, clock: FakeClock) -> None:
    calls = Calls()

    async def add(x: int, y: int) -> int:
        calls.hit(f"add {x} {y}")
        return x + y

    @corral.workflow
    async def sums(ctx: RunContext, n: int) -> int:
        a = await ctx.step(add, n, 1)
        await ctx.sleep(60)  # unloads the run: the rest runs after a replay
        b = await ctx.step(add, a, 2)
        await ctx.sleep(60)
        return await ctx.step(add, b, 3)

    handle = await corral.start(sums, 10)
    await corral.run_until_idle()
    assert await handle.status() == "waiting"
    for _ in range(2):
        clock.advance(60)
        await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == 16
    assert calls == {"add 10 1": 1, "add 11 2": 1, "add 13 3": 1}
    journal = await corral.journal(handle.run_id)
    assert [(s.seq, s.kind, s.status) for s in journal] == [
        (1, "step", "succeeded"),
        (2, "sleep", "succeeded"),
        (3, "step", "succeeded"),
        (4, "sleep", "succeeded"),
        (5, "step", "succeeded"),
    ]
    assert [json.loads(s.result or "null") for s in journal if s.kind == "step"] == [11, 13, 16]
    assert (await handle.get()).claims == 3


async def test_decorated_step_journals_under_its_name(corral: Corral) -> None:
    calls = Calls()

    @step(name="greet")
    async def greeting(name: str) -> str:
        calls.hit("greet")
        # A @step called from inside a step body is a plain call, not a second journal entry.
        return await shout(f"hello {name}")

    @step
    async def shout(text: str) -> str:
        calls.hit("shout")
        return text.upper()

    @corral.workflow
    async def hello(ctx: RunContext, names: list[str]) -> str:
        return await greeting(names[0])

    handle = await corral.start(hello, ["ada"])
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "HELLO ADA"
    assert calls == {"greet": 1, "shout": 1}
    [entry] = await corral.journal(handle.run_id)
    assert (entry.kind, entry.name, entry.status) == ("step", "greet", "succeeded")


async def test_decorated_step_outside_a_run_is_a_plain_call() -> None:
    @step
    async def double(x: int) -> int:
        return 2 * x

    assert await double(21) == 42


def test_step_decorator_refuses_a_sync_function() -> None:
    def sync(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="async def"):
        step(sync)  # type: ignore[arg-type]  # the misuse under test


async def test_sync_step_runs_in_a_thread_with_its_step_info(corral: Corral) -> None:
    seen: list[tuple[str, str | None]] = []

    def blocking_io(path: str) -> str:
        info = current_step()
        seen.append((threading.current_thread().name, info.idempotency_key if info else None))
        return f"read {path}"

    @corral.workflow
    async def reader(ctx: RunContext, paths: list[str]) -> str:
        return await ctx.step(blocking_io, paths[0], name="read")

    handle = await corral.start(reader, ["/etc/hosts"])
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "read /etc/hosts"
    [(thread, key)] = seen
    assert thread != threading.main_thread().name
    assert key == f"{handle.run_id}:1"


async def test_typed_results_are_their_types_live_and_on_replay(
    corral: Corral, clock: FakeClock
) -> None:
    seen: list[tuple[type, type, type]] = []

    async def charge(amount: int) -> Receipt:
        return Receipt(charge_id=f"ch_{amount}", amount=amount)

    async def weigh() -> Parcel:
        return Parcel(weight=1.5, tags=["fragile"])

    async def pair() -> tuple[int, str]:
        return (1, "one")

    @corral.workflow
    async def shop(ctx: RunContext, amount: int) -> Receipt:
        receipt = await ctx.step(charge, amount)
        parcel = await ctx.step(weigh)
        both = await ctx.step(pair)
        seen.append((type(receipt), type(parcel), type(both)))
        await ctx.sleep(5)
        return receipt

    handle = await corral.start(shop, 42)
    await corral.run_until_idle()
    clock.advance(5)
    await corral.run_until_idle()

    # One live execution, one replay: the same types both times.
    assert seen == [(Receipt, Parcel, tuple)] * 2
    result = await handle.wait_for_result(timeout=5)
    assert result == Receipt(charge_id="ch_42", amount=42)
    assert isinstance(result, Receipt)


async def test_untyped_results_are_the_same_json_live_and_on_replay(
    corral: Corral, clock: FakeClock
) -> None:
    seen: list[object] = []

    async def untyped():  # type: ignore[no-untyped-def]
        return (1, 2)

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        seen.append(await ctx.step(untyped, name="untyped"))
        await ctx.sleep(5)

    await corral.start(flow)
    await corral.run_until_idle()
    clock.advance(5)
    await corral.run_until_idle()
    # A tuple without an annotation is a JSON list, the first time as after a restart.
    assert seen == [[1, 2], [1, 2]]


async def test_step_that_raises_is_journaled_failed_and_fails_the_same_on_replay(
    corral: Corral, clock: FakeClock
) -> None:
    calls = Calls()
    caught: list[StepFailed] = []

    async def charge(amount: int) -> str:
        calls.hit("charge")
        raise ValueError(f"card declined for {amount}")

    @corral.workflow
    async def pay(ctx: RunContext, amount: int) -> str:
        try:
            await ctx.step(charge, amount, name="charge")
        except StepFailed as exc:
            caught.append(exc)
        await ctx.sleep(10)
        return "handled"

    handle = await corral.start(pay, 7)
    await corral.run_until_idle()
    clock.advance(10)
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == "handled"
    assert calls["charge"] == 1
    live, replayed = caught
    for error in (live, replayed):
        assert error.code == "step_failed"
        assert error.ids == {
            "run_id": handle.run_id,
            "seq": 1,
            "step": "charge",
            "error_type": "ValueError",
            "error_message": "card declined for 7",
            "error_code": "exception",  # a Corral error would carry its own code here
        }
    assert str(live) == str(replayed)
    [failed, _sleep] = await corral.journal(handle.run_id)
    assert failed.status == "failed"
    assert json.loads(failed.error or "{}")["type"] == "ValueError"


async def test_uncaught_step_failure_fails_the_run(corral: Corral) -> None:
    async def explode() -> None:
        raise RuntimeError("boom")

    @corral.workflow
    async def doomed(ctx: RunContext, _: None) -> None:
        await ctx.step(explode, name="explode")

    handle = await corral.start(doomed)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert error["code"] == "step_failed"
    assert error["step"] == "explode"
    assert "RuntimeError: boom" in error["message"]


async def test_non_serializable_result_names_the_step_and_the_type(corral: Corral) -> None:
    class Opaque:
        pass

    async def make():  # type: ignore[no-untyped-def]
        return Opaque()

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> None:
        await ctx.step(make, name="make_opaque")

    handle = await corral.start(flow)
    await corral.run_until_idle()
    run = await handle.get()
    assert run.status == "failed"
    error = error_of(run)
    assert error["code"] == NotSerializable.code
    assert error["value_type"].endswith("Opaque")
    assert "make_opaque" in error["message"]
    assert "step 1" in error["message"]
    assert "Opaque" in error["message"]


@pytest.mark.parametrize("at_most_once", [False, True], ids=["at_least_once", "at_most_once"])
async def test_non_serializable_result_is_catchable_and_the_body_still_runs_once(
    corral: Corral, clock: FakeClock, at_most_once: bool
) -> None:
    """Catching NotSerializable and moving on must not make the replay call the body again.

    The step's outcome is known (it produced a value that cannot be stored), so a replay has
    no reason to dispatch it a second time (nor, at most once, to ask for reconciliation): no
    worker crashed.
    """
    calls = Calls()
    caught: list[str] = []

    async def make():  # type: ignore[no-untyped-def]
        calls.hit("make")
        return threading.Lock()

    @corral.workflow
    async def flow(ctx: RunContext, _: None) -> str:
        try:
            await ctx.step(make, name="make_lock", at_most_once=at_most_once)
        except NotSerializable as exc:
            caught.append(exc.ids["value_type"])
        await ctx.sleep(5)
        return "moved on"

    handle = await corral.start(flow)
    await corral.run_until_idle()
    clock.advance(5)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "moved on"
    assert caught == ["lock", "lock"]
    assert calls["make"] == 1


async def test_idempotency_key_is_stable_across_a_redelivery(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """A step in flight when its worker died runs again, with the key of the first attempt."""
    attempts: list[tuple[str, bool]] = []

    async def charge(amount: int) -> str:
        info = current_step()
        assert info is not None
        attempts.append((info.idempotency_key, info.redelivered))
        await asyncio.sleep(0)  # the request is out (its intent journaled as "started")
        if len(attempts) == 1:
            raise Crash  # the process dies after dispatch, before the result is journaled
        return f"charged {amount}"

    @corral.workflow
    async def pay(ctx: RunContext, amount: int) -> str:
        return await ctx.step(charge, amount, name="charge")

    handle = await corral.start(pay, 5)
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    with pytest.raises(Crash):
        await execute_run(run, store=store, clock=clock, workflows=corral.workflows)

    clock.advance(31)  # the dead worker's lease expires; another worker takes the run
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == "charged 5"
    key = f"{handle.run_id}:1"
    assert attempts == [(key, False), (key, True)]
    [entry] = await corral.journal(handle.run_id)
    assert (entry.status, entry.idempotency_key) == ("succeeded", key)
    assert (await handle.get()).claims == 2


async def test_redelivery_of_a_journaled_intent(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    """The same, with the in-flight intent written as rows: the state a crash leaves behind."""
    attempts: list[tuple[str, bool]] = []

    @step(name="send_email")
    async def send_email(to: str) -> str:
        info = current_step()
        assert info is not None
        attempts.append((info.idempotency_key, info.redelivered))
        return f"sent to {to}"

    @corral.workflow
    async def notify(ctx: RunContext, to: list[str]) -> str:
        return await send_email(to[0])

    handle = await corral.start(notify, ["ada@example.com"])
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    await store.write_step(
        StepWrite(
            run_id=run.run_id,
            epoch=run.lease_epoch,
            seq=1,
            kind="step",
            name="send_email",
            status="started",
            at=clock.now(),
        )
    )
    clock.advance(31)
    await corral.run_until_idle()

    assert await handle.wait_for_result(timeout=5) == "sent to ada@example.com"
    assert attempts == [(f"{handle.run_id}:1", True)]


async def test_at_most_once_step_in_flight_at_a_crash_needs_reconciliation(
    corral: Corral, store: Store, clock: FakeClock
) -> None:
    calls = Calls()

    async def refund(amount: int) -> str:
        calls.hit("refund")
        raise Crash  # dies after dispatch: did the refund happen? Nobody knows.

    @corral.workflow
    async def pay_back(ctx: RunContext, amount: int) -> str:
        return await ctx.step(refund, amount, name="refund", at_most_once=True)

    handle = await corral.start(pay_back, 30)
    [run] = await store.claim_runs(worker_id="doomed", limit=1, now=clock.now(), lease_ttl=30)
    with pytest.raises(Crash):
        await execute_run(run, store=store, clock=clock, workflows=corral.workflows)
    [intent] = await corral.journal(handle.run_id)
    assert (intent.status, intent.at_most_once) == ("started", True)

    clock.advance(31)
    await corral.run_until_idle()

    run = await handle.get()
    assert run.status == "needs_reconciliation"
    assert calls["refund"] == 1  # never called a second time
    error = error_of(run)
    assert error["code"] == "needs_reconciliation"
    assert (error["seq"], error["step"]) == (1, "refund")
    with pytest.raises(Exception, match="needs_reconciliation"):
        await handle.wait_for_result(timeout=5)


async def test_at_most_once_step_that_completed_is_not_reconciled(
    corral: Corral, clock: FakeClock
) -> None:
    calls = Calls()

    async def refund(amount: int) -> str:
        calls.hit("refund")
        return f"refunded {amount}"

    @corral.workflow
    async def pay_back(ctx: RunContext, amount: int) -> str:
        done = await ctx.step(refund, amount, name="refund", at_most_once=True)
        await ctx.sleep(1)
        return done

    handle = await corral.start(pay_back, 30)
    await corral.run_until_idle()
    clock.advance(1)
    await corral.run_until_idle()
    assert await handle.wait_for_result(timeout=5) == "refunded 30"
    assert calls["refund"] == 1


async def test_a_suspended_body_is_journaled_as_started_and_a_quick_one_in_one_write(
    corral: Corral, store: Store
) -> None:
    """An at-least-once step's intent is written when its body first suspends, not before."""
    release = asyncio.Event()
    cleaned_up: list[str] = []

    async def quick() -> int:
        return 1

    async def slow() -> int:
        try:
            await release.wait()
            return 2
        finally:
            cleaned_up.append("slow")

    @corral.workflow
    async def flow(ctx: RunContext) -> int:
        return await ctx.step(quick) + await ctx.step(slow)

    handle = await corral.start(flow)
    worker = corral.worker(concurrency=1)
    task = asyncio.create_task(worker.run())
    try:

        async def slow_in_flight() -> bool:
            journal = await store.load_journal(handle.run_id)
            return [(s.name, s.status) for s in journal] == [
                (
                    "test_a_suspended_body_is_journaled_as_started_and_a_quick_one_in_one_write"
                    ".<locals>.quick",
                    "succeeded",
                ),
                (
                    "test_a_suspended_body_is_journaled_as_started_and_a_quick_one_in_one_write"
                    ".<locals>.slow",
                    "started",
                ),
            ]

        await eventually(slow_in_flight, what="the slow step to be journaled as started")
        release.set()
        assert await handle.wait_for_result(timeout=5) == 3
    finally:
        worker.stop()
        await task
    assert cleaned_up == ["slow"]
    journal = await store.load_journal(handle.run_id)
    assert [s.status for s in journal] == ["succeeded", "succeeded"]


async def test_cancelling_a_run_reaches_its_suspended_step_body(corral: Corral) -> None:
    """A cancel thrown into a suspended body arrives there, as with a plain `await`."""
    entered = asyncio.Event()
    seen: list[str] = []

    async def hang() -> None:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    @corral.workflow
    async def flow(ctx: RunContext) -> None:
        await ctx.step(hang)

    handle = await corral.start(flow)
    worker = corral.worker(concurrency=1)
    task = asyncio.create_task(worker.run())
    try:
        await asyncio.wait_for(entered.wait(), timeout=5)
        await corral.cancel(handle.run_id)
        await eventually(lambda: _done(seen), what="the body to see the cancellation")
    finally:
        worker.stop()
        await task
    assert seen == ["cancelled"]
    assert await handle.status() == "cancelled"


async def _done(seen: list[str]) -> bool:
    return bool(seen)
