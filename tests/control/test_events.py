"""Events read from where Corral records them: each type, its id, tenant, time and body; reads
by window are repeatable; expiring approvals come before their deadline and only while pending."""

from __future__ import annotations

import pytest

from corral.control.events import (
    EXPIRY_WARNING,
    NOTIFICATION_TYPES,
    STREAM_TYPES,
    Event,
    check_types,
    detect_events,
)
from corral.governance.approvals import deadline_script
from corral.store import Store
from corral.testing import FakeClock

from .sources import fail_run, make_approval, open_breaker, refuse_budget

pytestmark = pytest.mark.timeout(60)


async def read(
    store: Store,
    since: float,
    until: float,
    *,
    tenant: str | None = None,
    types: tuple[str, ...] = NOTIFICATION_TYPES,
    now: float | None = None,
) -> list[Event]:
    return await store.read_script(
        lambda d: detect_events(since=since, until=until, now=now, tenant=tenant, types=types)
    )


async def test_each_kind_of_event_is_read_with_a_stable_id(store: Store, clock: FakeClock) -> None:
    start = clock.now()
    approval = await make_approval(
        store, at=start, arguments={"order": "A-1", "email": "ada@example.com"}
    )
    await refuse_budget(store, at=start + 1)
    await open_breaker(store, at=start + 2)
    clock.advance(3)
    run_id = await fail_run(store, clock)

    events = await read(store, start, clock.now())
    assert [(e.type, e.event_id) for e in events] == [
        ("approval.requested", f"approval.requested:{approval.approval_id}"),
        ("budget.alert", "budget.alert:default:2"),
        ("breaker.opened", "breaker.opened:1"),
        ("run.failed", f"run.failed:{run_id}"),
    ]
    requested, budget, breaker, failed = events
    assert requested.tenant == "default"
    assert requested.time == start
    assert requested.data["link"] == f"/approvals/{approval.approval_id}"
    assert requested.data["arguments"] == {"order": "A-1", "email": "[redacted:email]"}
    assert (requested.data["tool"], requested.data["approvers"]) == ("refund", ["finance"])
    assert requested.data["reason"] == "refunds over 100 need finance"
    assert budget.data["kind"] == "exceeded"
    assert budget.data["run_id"] == "run-1"
    assert budget.data["limits"][0]["budget"] == "daily spend"
    assert breaker.tenant is None
    assert breaker.data["dependency"] == "openai"
    assert failed.data["error"]["message"] == "order A-1 cannot be refunded"
    assert failed.data["link"] == f"/runs/{run_id}"
    assert requested.body("default")["time"] == "2023-11-14T22:13:20Z"

    # The same window read again gives the same events: readers can overlap their reads.
    assert await read(store, start, clock.now()) == events
    # Windows are inclusive at both ends and leave out what is outside them.
    assert [e.type for e in await read(store, start + 1, start + 2)] == [
        "budget.alert",
        "breaker.opened",
    ]


async def test_a_tenant_sees_its_own_events_and_every_breaker(
    store: Store, clock: FakeClock
) -> None:
    now = clock.now()
    await make_approval(store, at=now, tenant="acme", run_id="acme-run")
    await make_approval(store, at=now, tenant="globex", run_id="globex-run")
    await open_breaker(store, at=now)
    seen = await read(store, now, now, tenant="acme")
    assert [(e.type, e.tenant) for e in seen] == [
        ("approval.requested", "acme"),
        ("breaker.opened", None),
    ]
    assert seen[0].data["run_id"] == "acme-run"


async def test_run_updates_are_stream_events(store: Store, clock: FakeClock) -> None:
    start = clock.now()
    run_id = await fail_run(store, clock)
    updated = await read(store, start, clock.now(), types=STREAM_TYPES)
    assert {e.type for e in updated} == {"run.updated", "run.failed"}
    change = next(e for e in updated if e.type == "run.updated")
    assert change.data["status"] == "failed"
    assert change.event_id.startswith(f"run.updated:{run_id}:")
    assert [e.type for e in await read(store, start, clock.now())] == ["run.failed"]


async def test_an_approval_warns_before_its_deadline_while_pending(
    store: Store, clock: FakeClock
) -> None:
    start = clock.now()
    hour = 3600.0
    waiting = await make_approval(store, at=start, deadline=hour, run_id="r1")
    await make_approval(store, at=start, deadline=EXPIRY_WARNING / 2, run_id="r2")
    warn_at = start + hour - EXPIRY_WARNING

    assert {e.type for e in await read(store, start, warn_at - 1)} == {"approval.requested"}
    expiring = [e for e in await read(store, warn_at, warn_at) if e.type == "approval.expiring"]
    assert [e.event_id for e in expiring] == [
        f"approval.expiring:{waiting.approval_id}:{start + hour:.3f}"
    ]
    assert expiring[0].time == warn_at
    assert expiring[0].data["deadline"] is not None
    # The short one was never warned about (its request said how little time there was).

    # Decided (here: the deadline passed and rejected it): no more warnings.
    clock.advance(hour + 1)
    await store.run_script(deadline_script(waiting.approval_id, now=clock.now()))
    assert not [
        e for e in await read(store, warn_at, warn_at, now=warn_at) if e.type == "approval.expiring"
    ]


def test_event_types_are_checked() -> None:
    assert check_types(["run.failed", "run.failed"], allowed=NOTIFICATION_TYPES) == ["run.failed"]
    with pytest.raises(ValueError, match=r"unknown event type 'run\.exploded'"):
        check_types(["run.exploded"], allowed=NOTIFICATION_TYPES)
