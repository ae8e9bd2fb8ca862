"""The store contract: what every backend must do, run once per backend by the `store` fixture.

Time is passed to the store, never read by it, so these tests move it by passing `now`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import json

import pytest

from corral import LeaseLost, RunAlreadyFinished, RunNotFound
from corral.store import RUN_STATUSES, NewRun, RunRecord, StepWrite, Store

T0 = 1_700_000_000.0
TTL = 30.0
_ids = itertools.count(1)


def new_run(**fields: object) -> NewRun:
    values: dict[str, object] = {
        "run_id": f"run-{next(_ids):04d}",
        "workflow": "wf",
        "workflow_version": "1",
        "input": '{"x": 1}',
        "created_at": T0,
    }
    values.update(fields)
    return NewRun(**values)  # type: ignore[arg-type]


def step_write(run: RunRecord, seq: int, **fields: object) -> StepWrite:
    values: dict[str, object] = {
        "run_id": run.run_id,
        "epoch": run.lease_epoch,
        "seq": seq,
        "kind": "step",
        "name": f"s{seq}",
        "status": "succeeded",
        "at": T0,
        "result": json.dumps(seq),
    }
    values.update(fields)
    return StepWrite(**values)  # type: ignore[arg-type]


async def create(store: Store, **fields: object) -> RunRecord:
    run, created = await store.create_run(new_run(**fields))
    assert created
    return run


async def claim_one(store: Store, *, now: float = T0, worker: str = "w1") -> RunRecord:
    claimed = await store.claim_runs(worker_id=worker, limit=1, now=now, lease_ttl=TTL)
    assert len(claimed) == 1, claimed
    return claimed[0]


async def running(store: Store, *, now: float = T0, **fields: object) -> RunRecord:
    """A fresh run claimed by w1 at `now` (on a store with no other runnable run)."""
    run = await create(store, **fields)
    claimed = await claim_one(store, now=now)
    assert claimed.run_id == run.run_id
    return claimed


async def get(store: Store, run_id: str) -> RunRecord:
    run = await store.get_run(run_id)
    assert run is not None, run_id
    return run


# -- lifecycle ---------------------------------------------------------------------------------


async def test_open_and_close_are_idempotent(store: Store) -> None:
    await store.open()
    await store.close()
    await store.close()
    await store.open()
    assert await store.get_run("none") is None


async def test_data_survives_reopening(store: Store) -> None:
    run = await create(store)
    await store.close()
    await store.open()
    assert await get(store, run.run_id) == run


# -- runs --------------------------------------------------------------------------------------


async def test_create_run(store: Store) -> None:
    new = new_run(tenant="acme", idempotency_key="k1", started_by="ada")
    run, created = await store.create_run(new)
    assert created
    assert dataclasses.asdict(run) == {
        "run_id": new.run_id,
        "tenant": "acme",
        "workflow": "wf",
        "workflow_version": "1",
        "status": "pending",
        "input": '{"x": 1}',
        "result": None,
        "error": None,
        "idempotency_key": "k1",
        "parent_run_id": None,
        "parent_step_seq": None,
        "created_at": T0,
        "updated_at": T0,
        "wake_at": None,
        "wake_seq": 0,
        "lease_owner": None,
        "lease_epoch": 0,
        "lease_expires_at": None,
        "claims": 0,
        "started_by": "ada",
        "root_run_id": new.run_id,  # a run without a parent is its own tree's root
    }
    assert await store.get_run(new.run_id) == run
    assert await store.get_run("no-such-run") is None


async def test_idempotency_key_returns_the_first_run(store: Store) -> None:
    first, created = await store.create_run(new_run(idempotency_key="order-7"))
    again, created_again = await store.create_run(new_run(idempotency_key="order-7", input="2"))
    assert created
    assert not created_again
    assert again == first  # the first input is kept

    other_tenant, created_other = await store.create_run(
        new_run(idempotency_key="order-7", tenant="other")
    )
    assert created_other
    assert other_tenant.run_id != first.run_id
    no_key_a, a = await store.create_run(new_run())
    no_key_b, b = await store.create_run(new_run())
    assert a
    assert b
    assert no_key_a.run_id != no_key_b.run_id


async def test_concurrent_creates_with_one_key_make_one_run(store: Store) -> None:
    results = await asyncio.gather(
        *(store.create_run(new_run(idempotency_key="same")) for _ in range(20))
    )
    assert len({run.run_id for run, _ in results}) == 1
    assert sum(created for _, created in results) == 1


async def test_list_runs_newest_first_with_filters(store: Store) -> None:
    a = await create(store, workflow="alpha", created_at=T0 + 1)
    b = await create(store, workflow="beta", created_at=T0 + 3)
    c = await create(store, workflow="alpha", created_at=T0 + 2)
    d = await create(store, workflow="alpha", created_at=T0 + 4, parent_run_id=a.run_id)

    def ids(runs: list[RunRecord]) -> list[str]:
        return [run.run_id for run in runs]

    assert ids(await store.list_runs()) == ids([d, b, c, a])
    assert ids(await store.list_runs(workflow="alpha")) == ids([d, c, a])
    assert ids(await store.list_runs(parent_run_id=a.run_id)) == [d.run_id]
    assert ids(await store.list_runs(limit=2)) == ids([d, b])
    assert await store.list_runs(status="running") == []
    await store.cancel_run(b.run_id, now=T0)
    assert ids(await store.list_runs(status="cancelled")) == [b.run_id]
    assert ids(await store.list_runs(status="pending", workflow="alpha", limit=1)) == [d.run_id]


async def test_count_runs_names_every_status(store: Store) -> None:
    assert await store.count_runs() == dict.fromkeys(RUN_STATUSES, 0)
    await create(store)
    await create(store)
    await claim_one(store)
    counts = await store.count_runs()
    assert (counts["pending"], counts["running"], counts["succeeded"]) == (1, 1, 0)


# -- claims ------------------------------------------------------------------------------------


async def test_claim_a_pending_run(store: Store) -> None:
    run = await create(store)
    claimed = await claim_one(store, now=T0 + 5, worker="w1")
    assert claimed.run_id == run.run_id
    assert claimed.status == "running"
    assert claimed.lease_owner == "w1"
    assert claimed.lease_epoch == 1
    assert claimed.lease_expires_at == T0 + 5 + TTL
    assert claimed.claims == 1
    assert claimed.updated_at == T0 + 5
    assert await get(store, run.run_id) == claimed
    assert await store.claim_runs(worker_id="w2", limit=5, now=T0 + 5, lease_ttl=TTL) == []


async def test_claim_takes_pending_runs_oldest_first(store: Store) -> None:
    late = await create(store, created_at=T0 + 2)
    early = await create(store, created_at=T0 + 1)
    assert (await claim_one(store, now=T0 + 10)).run_id == early.run_id
    assert (await claim_one(store, now=T0 + 10)).run_id == late.run_id


async def test_claim_a_waiting_run_only_when_its_time_has_come(store: Store) -> None:
    run = await running(store)
    await store.suspend_run(run.run_id, run.lease_epoch, wake_at=T0 + 60, seen_wake_seq=0, now=T0)
    assert await store.claim_runs(worker_id="w", limit=1, now=T0 + 59, lease_ttl=TTL) == []
    again = await claim_one(store, now=T0 + 60)  # wake_at <= now
    assert (again.run_id, again.lease_epoch, again.wake_at) == (run.run_id, 2, None)


async def test_a_run_waiting_for_an_event_is_never_claimed_by_time(store: Store) -> None:
    run = await running(store)
    await store.suspend_run(run.run_id, run.lease_epoch, wake_at=None, seen_wake_seq=0, now=T0)
    assert await store.claim_runs(worker_id="w", limit=1, now=T0 + 10**9, lease_ttl=TTL) == []
    assert not await store.has_runnable(now=T0 + 10**9)


async def test_claim_a_running_run_only_once_its_lease_expired(store: Store) -> None:
    run = await running(store)
    expiry = T0 + TTL
    assert await store.claim_runs(worker_id="w2", limit=1, now=expiry, lease_ttl=TTL) == []
    taken = await claim_one(store, now=expiry + 0.001, worker="w2")  # lease_expires_at < now
    assert taken.run_id == run.run_id
    assert (taken.lease_owner, taken.lease_epoch, taken.claims) == ("w2", 2, 2)
    assert taken.lease_expires_at == expiry + 0.001 + TTL


async def test_finished_and_reconciliation_runs_are_never_claimed(store: Store) -> None:
    done = await running(store)
    await store.finish_run(done.run_id, 1, status="succeeded", result="1", error=None, now=T0)
    stuck = await running(store)
    await store.finish_run(
        stuck.run_id, 1, status="needs_reconciliation", result=None, error="{}", now=T0
    )
    cancelled = await create(store)
    await store.cancel_run(cancelled.run_id, now=T0)
    assert await store.claim_runs(worker_id="w", limit=10, now=T0 + 10**6, lease_ttl=TTL) == []


async def test_claim_respects_the_limit_across_kinds(store: Store) -> None:
    for _ in range(3):
        run = await running(store)
        await store.suspend_run(run.run_id, 1, wake_at=T0 + 1, seen_wake_seq=0, now=T0)
    for _ in range(3):
        await create(store)
    first = await store.claim_runs(worker_id="w", limit=4, now=T0 + 2, lease_ttl=TTL)
    second = await store.claim_runs(worker_id="w", limit=4, now=T0 + 2, lease_ttl=TTL)
    third = await store.claim_runs(worker_id="w", limit=4, now=T0 + 2, lease_ttl=TTL)
    assert (len(first), len(second), third) == (4, 2, [])
    assert len({r.run_id for r in first} | {r.run_id for r in second}) == 6


async def test_concurrent_claims_take_each_run_once(store: Store) -> None:
    runs = [await create(store) for _ in range(40)]
    batches = await asyncio.gather(
        *(store.claim_runs(worker_id=f"w{i}", limit=3, now=T0, lease_ttl=TTL) for i in range(20))
    )
    claimed = [run.run_id for batch in batches for run in batch]
    assert all(len(batch) <= 3 for batch in batches)
    assert sorted(claimed) == sorted(run.run_id for run in runs)  # all of them, each once
    for batch in batches:
        for run in batch:
            assert run.lease_owner == (await get(store, run.run_id)).lease_owner


# -- leases ------------------------------------------------------------------------------------


async def test_renew_leases(store: Store) -> None:
    mine = await running(store, now=T0 + 20)
    stolen = await running(store)
    finished = await running(store, now=T0 + 20)
    await store.finish_run(finished.run_id, 1, status="succeeded", result="1", error=None, now=T0)
    await claim_one(store, now=T0 + TTL + 1, worker="w2")  # takes `stolen` over (expired)

    lost = await store.renew_leases(
        [(mine.run_id, 1), (stolen.run_id, 1), (finished.run_id, 1), ("unknown", 1)],
        now=T0 + 10,
        lease_ttl=TTL,
    )
    assert sorted(lost) == sorted([stolen.run_id, finished.run_id, "unknown"])
    assert (await get(store, mine.run_id)).lease_expires_at == T0 + 10 + TTL
    assert (await get(store, stolen.run_id)).lease_owner == "w2"
    assert await store.renew_leases([], now=T0, lease_ttl=TTL) == []


# -- journal -----------------------------------------------------------------------------------


async def test_write_intent_then_outcome(store: Store) -> None:
    run = await running(store)
    intent = step_write(
        run, 1, status="started", at_most_once=True, detail='{"args": "h"}', result=None
    )
    await store.write_step(intent)
    [started] = await store.load_journal(run.run_id)
    assert (started.status, started.at_most_once, started.detail) == (
        "started",
        True,
        '{"args": "h"}',
    )
    assert (started.result, started.finished_at, started.started_at) == (None, None, T0)
    assert started.idempotency_key == f"{run.run_id}:1"

    await store.write_step(step_write(run, 1, at=T0 + 5, at_most_once=True, result='"ok"'))
    [done] = await store.load_journal(run.run_id)
    assert (done.status, done.result, done.error) == ("succeeded", '"ok"', None)
    assert (done.started_at, done.finished_at) == (T0, T0 + 5)
    assert done.detail == '{"args": "h"}'  # an outcome without detail keeps the intent's

    # A late duplicate of the intent (a redelivery racing the outcome) changes nothing.
    await store.write_step(intent)
    assert await store.load_journal(run.run_id) == [done]


async def test_failed_outcome_keeps_its_error(store: Store) -> None:
    run = await running(store)
    await store.write_step(step_write(run, 1, status="failed", result=None, error='{"code": "x"}'))
    [entry] = await store.load_journal(run.run_id)
    assert (entry.status, entry.error, entry.result) == ("failed", '{"code": "x"}', None)


async def test_journal_is_in_step_order(store: Store) -> None:
    run = await running(store)
    for seq in (3, 1, 2):
        await store.write_step(step_write(run, seq))
    assert [s.seq for s in await store.load_journal(run.run_id)] == [1, 2, 3]
    assert await store.load_journal("unknown") == []


async def test_submit_step_resolves_at_commit(store: Store) -> None:
    run = await running(store)
    future = store.submit_step(step_write(run, 1))
    await future
    assert future.done()
    assert len(await store.load_journal(run.run_id)) == 1


async def test_many_concurrent_writes_land_and_a_fenced_one_fails_alone(store: Store) -> None:
    runs = [await running(store, now=T0 + 20) for _ in range(8)]
    stale = await running(store)
    await claim_one(store, now=T0 + TTL + 1, worker="w2")  # fences `stale`'s epoch 1
    writes = [step_write(run, seq) for run in runs for seq in range(1, 26)]
    outcomes = await asyncio.gather(
        *(store.write_step(w) for w in writes[:100]),
        store.write_step(step_write(stale, 1)),
        *(store.write_step(w) for w in writes[100:]),
        return_exceptions=True,
    )
    assert isinstance(outcomes[100], LeaseLost)
    assert [o for i, o in enumerate(outcomes) if i != 100] == [None] * len(writes)
    for run in runs:
        assert [s.seq for s in await store.load_journal(run.run_id)] == list(range(1, 26))
    assert await store.load_journal(stale.run_id) == []


# -- fencing -----------------------------------------------------------------------------------


async def test_every_write_of_a_stale_epoch_is_refused_and_changes_nothing(store: Store) -> None:
    old = await running(store)
    await store.send_signal(old.run_id, "go", '"data"', now=T0)
    new = await claim_one(store, now=T0 + TTL + 1, worker="w2")
    assert (new.run_id, new.lease_epoch) == (old.run_id, 2)
    before = await get(store, old.run_id)
    write = step_write(old, 1)
    child = new_run(parent_run_id=old.run_id, parent_step_seq=1)

    attempts = {
        "write_step": store.write_step(write),
        "start_child": store.start_child(write, child),
        "take_signal": store.take_signal(write, signal_name="go"),
        "suspend_run": store.suspend_run(old.run_id, 1, wake_at=None, seen_wake_seq=0, now=T0),
        "finish_run": store.finish_run(
            old.run_id, 1, status="succeeded", result="1", error=None, now=T0
        ),
        "release_run": store.release_run(old.run_id, 1, wake_at=T0, now=T0),
    }
    for name, attempt in attempts.items():
        with pytest.raises(LeaseLost):
            await attempt
        assert await get(store, old.run_id) == before, name

    assert await store.load_journal(old.run_id) == []
    assert await store.get_run(child.run_id) is None
    [signal] = await store.list_signals(old.run_id)
    assert signal.consumed_seq is None


async def test_writes_for_a_run_that_is_not_running_are_refused(store: Store) -> None:
    pending = await create(store)
    with pytest.raises(LeaseLost):
        await store.write_step(step_write(pending, 1))
    with pytest.raises(LeaseLost):
        await store.write_step(step_write(pending, 1, run_id="unknown"))


# -- suspend, finish, release ------------------------------------------------------------------


async def test_suspend_parks_the_run_and_drops_its_lease(store: Store) -> None:
    run = await running(store)
    await store.suspend_run(run.run_id, 1, wake_at=T0 + 60, seen_wake_seq=0, now=T0 + 1)
    parked = await get(store, run.run_id)
    assert (parked.status, parked.wake_at, parked.updated_at) == ("waiting", T0 + 60, T0 + 1)
    assert (parked.lease_owner, parked.lease_expires_at) == (None, None)
    with pytest.raises(LeaseLost):  # the lease is gone: even its own epoch cannot write now
        await store.write_step(step_write(run, 1))


async def test_an_event_between_claim_and_suspend_makes_the_run_runnable_at_once(
    store: Store,
) -> None:
    run = await running(store)
    seen = run.wake_seq
    await store.send_signal(run.run_id, "go", "1", now=T0 + 2)  # while it still runs
    await store.suspend_run(run.run_id, 1, wake_at=None, seen_wake_seq=seen, now=T0 + 3)
    parked = await get(store, run.run_id)
    assert (parked.status, parked.wake_at) == ("waiting", T0 + 3)
    assert await store.has_runnable(now=T0 + 3)
    assert (await claim_one(store, now=T0 + 3)).run_id == run.run_id


async def test_an_event_between_claim_and_suspend_beats_a_later_timer(store: Store) -> None:
    run = await running(store)
    await store.send_signal(run.run_id, "go", "1", now=T0)
    await store.suspend_run(run.run_id, 1, wake_at=T0 + 3600, seen_wake_seq=0, now=T0 + 1)
    assert (await get(store, run.run_id)).wake_at == T0 + 1


async def test_finish_run_records_the_outcome_once(store: Store) -> None:
    run = await running(store)
    await store.finish_run(
        run.run_id, 1, status="succeeded", result='"out"', error=None, now=T0 + 9
    )
    done = await get(store, run.run_id)
    assert (done.status, done.result, done.error, done.updated_at) == (
        "succeeded",
        '"out"',
        None,
        T0 + 9,
    )
    assert (done.lease_owner, done.lease_expires_at, done.wake_at) == (None, None, None)
    assert done.finished
    with pytest.raises(LeaseLost):
        await store.finish_run(run.run_id, 1, status="failed", result=None, error="{}", now=T0)
    assert await get(store, run.run_id) == done


async def test_finishing_a_child_wakes_its_waiting_parent(store: Store) -> None:
    parent = await running(store)
    child = new_run(parent_run_id=parent.run_id, parent_step_seq=1)
    await store.start_child(step_write(parent, 1, kind="child.start", name="wf"), child)
    await store.suspend_run(parent.run_id, 1, wake_at=None, seen_wake_seq=0, now=T0)
    child_run = await claim_one(store, now=T0 + 1)
    assert child_run.run_id == child.run_id
    assert child_run.root_run_id == parent.run_id  # the top of its tree, read back on claim
    assert (await get(store, parent.run_id)).wake_at is None
    await store.finish_run(child.run_id, 1, status="failed", result=None, error="{}", now=T0 + 2)

    woken = await get(store, parent.run_id)
    assert (woken.status, woken.wake_at, woken.wake_seq) == ("waiting", T0 + 2, 1)
    assert (await claim_one(store, now=T0 + 2)).run_id == parent.run_id


async def test_release_gives_the_run_back_until_a_time(store: Store) -> None:
    run = await running(store)
    await store.release_run(run.run_id, 1, wake_at=T0 + 30, now=T0 + 1)
    released = await get(store, run.run_id)
    assert (released.status, released.wake_at, released.lease_owner) == ("pending", T0 + 30, None)
    assert not await store.has_runnable(now=T0 + 29)
    assert await store.claim_runs(worker_id="w", limit=1, now=T0 + 29, lease_ttl=TTL) == []
    assert await store.next_wake_at() == T0 + 30
    again = await claim_one(store, now=T0 + 30)
    assert (again.run_id, again.lease_epoch, again.claims) == (run.run_id, 2, 2)


# -- children ----------------------------------------------------------------------------------


async def test_start_child_creates_the_child_and_journals_the_step_once(store: Store) -> None:
    parent = await running(store)
    child = new_run(parent_run_id=parent.run_id, parent_step_seq=1, workflow="kid")
    write = step_write(parent, 1, kind="child.start", name="kid", result=json.dumps(child.run_id))
    await store.start_child(write, child)
    await store.start_child(write, child)  # a retry of the same step: no second child

    [entry] = await store.load_journal(parent.run_id)
    assert (entry.kind, entry.result) == ("child.start", json.dumps(child.run_id))
    [kid] = await store.list_runs(parent_run_id=parent.run_id)
    assert (kid.run_id, kid.status, kid.workflow) == (child.run_id, "pending", "kid")
    assert (kid.parent_run_id, kid.parent_step_seq) == (parent.run_id, 1)


# -- signals -----------------------------------------------------------------------------------


async def test_signals_are_taken_oldest_first_by_name_and_consumed(store: Store) -> None:
    run = await running(store)
    a1 = await store.send_signal(run.run_id, "a", '"a1"', now=T0 + 1)
    await store.send_signal(run.run_id, "b", '"b1"', now=T0 + 2)
    await store.send_signal(run.run_id, "a", '"a2"', now=T0 + 3)
    assert (a1.name, a1.payload, a1.created_at, a1.consumed_seq) == ("a", '"a1"', T0 + 1, None)

    def wait(seq: int, name: str) -> StepWrite:
        return step_write(run, seq, kind="signal", name=name, result=None)

    first = await store.take_signal(wait(1, "a"), signal_name="a")
    second = await store.take_signal(wait(2, "a"), signal_name="a")
    assert first is not None
    assert second is not None
    assert (first.payload, first.consumed_seq) == ('"a1"', 1)
    assert (second.payload, second.consumed_seq) == ('"a2"', 2)
    assert await store.take_signal(wait(3, "a"), signal_name="a") is None  # writes nothing
    b = await store.take_signal(wait(3, "b"), signal_name="b")
    assert b is not None
    assert b.payload == '"b1"'

    journal = await store.load_journal(run.run_id)
    assert [(s.seq, s.name, s.result, s.status) for s in journal] == [
        (1, "a", '"a1"', "succeeded"),
        (2, "a", '"a2"', "succeeded"),
        (3, "b", '"b1"', "succeeded"),
    ]
    signals = await store.list_signals(run.run_id)
    assert [(s.name, s.payload, s.consumed_seq) for s in signals] == [
        ("a", '"a1"', 1),
        ("b", '"b1"', 3),
        ("a", '"a2"', 2),
    ]


async def test_send_signal_wakes_a_waiting_run(store: Store) -> None:
    run = await running(store)
    await store.suspend_run(run.run_id, 1, wake_at=T0 + 3600, seen_wake_seq=0, now=T0)
    await store.send_signal(run.run_id, "go", "1", now=T0 + 5)
    woken = await get(store, run.run_id)
    assert (woken.status, woken.wake_at, woken.wake_seq) == ("waiting", T0 + 5, 1)


async def test_send_signal_to_a_pending_run_only_records_the_event(store: Store) -> None:
    run = await create(store)
    await store.send_signal(run.run_id, "go", "1", now=T0 + 5)
    after = await get(store, run.run_id)
    assert (after.status, after.wake_at, after.wake_seq) == ("pending", None, 1)


async def test_send_signal_to_a_finished_or_unknown_run_is_refused(store: Store) -> None:
    run = await running(store)
    await store.finish_run(run.run_id, 1, status="succeeded", result="1", error=None, now=T0)
    with pytest.raises(RunAlreadyFinished):
        await store.send_signal(run.run_id, "go", "1", now=T0)
    with pytest.raises(RunNotFound):
        await store.send_signal("unknown", "go", "1", now=T0)
    assert await store.list_signals(run.run_id) == []


# -- cancel ------------------------------------------------------------------------------------


async def test_cancel_cascades_bumps_epochs_and_fences(store: Store) -> None:
    parent = await running(store)
    kids = []
    for seq in (1, 2):
        kid = new_run(parent_run_id=parent.run_id, parent_step_seq=seq)
        await store.start_child(step_write(parent, seq, kind="child.start", name="wf"), kid)
        kids.append(kid.run_id)
    done_kid = await claim_one(store, now=T0 + 1)
    await store.finish_run(done_kid.run_id, 1, status="succeeded", result="1", error=None, now=T0)
    live_kid = await claim_one(store, now=T0 + 1)
    grandchild = new_run(parent_run_id=live_kid.run_id, parent_step_seq=1)
    await store.start_child(step_write(live_kid, 1, kind="child.start", name="wf"), grandchild)

    record = await store.cancel_run(parent.run_id, now=T0 + 7)
    assert (record.run_id, record.status, record.lease_epoch) == (parent.run_id, "cancelled", 2)
    assert json.loads(record.error or "{}")["code"] == "cancelled"
    assert (record.lease_owner, record.lease_expires_at, record.updated_at) == (None, None, T0 + 7)

    statuses = {r.run_id: (r.status, r.lease_epoch) for r in await store.list_runs()}
    assert statuses[done_kid.run_id] == ("succeeded", 1)  # finished: untouched
    assert statuses[live_kid.run_id] == ("cancelled", 2)
    assert statuses[grandchild.run_id] == ("cancelled", 1)
    for run, epoch in ((parent, 1), (live_kid, 1)):
        with pytest.raises(LeaseLost):
            await store.write_step(step_write(run, 9, epoch=epoch))
    assert await store.claim_runs(worker_id="w", limit=10, now=T0 + 10**6, lease_ttl=TTL) == []


async def test_cancelling_a_child_wakes_its_parent(store: Store) -> None:
    parent = await running(store)
    kid = new_run(parent_run_id=parent.run_id, parent_step_seq=1)
    await store.start_child(step_write(parent, 1, kind="child.start", name="wf"), kid)
    await store.suspend_run(parent.run_id, 1, wake_at=None, seen_wake_seq=0, now=T0)
    await store.cancel_run(kid.run_id, now=T0 + 4)
    woken = await get(store, parent.run_id)
    assert (woken.status, woken.wake_at) == ("waiting", T0 + 4)
    assert (await get(store, kid.run_id)).status == "cancelled"


async def test_cancel_a_finished_or_unknown_run_is_refused(store: Store) -> None:
    run = await create(store)
    await store.cancel_run(run.run_id, now=T0)
    with pytest.raises(RunAlreadyFinished):
        await store.cancel_run(run.run_id, now=T0)
    with pytest.raises(RunNotFound):
        await store.cancel_run("unknown", now=T0)


# -- has_runnable, next_wake_at ----------------------------------------------------------------


async def test_has_runnable_and_next_wake_at(store: Store) -> None:
    assert not await store.has_runnable(now=T0)
    assert await store.next_wake_at() is None

    sleeper = await running(store)
    assert not await store.has_runnable(now=T0)  # its lease is valid
    assert await store.next_wake_at() == T0 + TTL  # when the lease would expire
    assert await store.has_runnable(now=T0 + TTL + 1)

    await store.suspend_run(sleeper.run_id, 1, wake_at=T0 + 100, seen_wake_seq=0, now=T0)
    assert await store.next_wake_at() == T0 + 100
    assert not await store.has_runnable(now=T0 + 99)
    assert await store.has_runnable(now=T0 + 100)

    await create(store)
    assert await store.has_runnable(now=T0)


async def test_list_runs_of_one_tenant(store: Store) -> None:
    ours = await create(store, workflow="alpha", created_at=T0)
    theirs, _ = await store.create_run(new_run(tenant="acme", workflow="alpha"))

    def ids(runs: list[RunRecord]) -> list[str]:
        return [run.run_id for run in runs]

    assert ids(await store.list_runs(tenant="default")) == [ours.run_id]
    assert ids(await store.list_runs(tenant="acme")) == [theirs.run_id]
    assert sorted(ids(await store.list_runs())) == sorted([ours.run_id, theirs.run_id])
