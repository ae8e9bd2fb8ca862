"""Webhook subscriptions and the outbox: URLs and event types are checked; enqueueing reads
overlapping windows without duplicates and without losing an event committed late; events go
to the subscriptions of their tenant (breakers: of every tenant) that existed when they
happened."""

from __future__ import annotations

import pytest

from corral.control.events import LOOKBACK
from corral.control.webhooks import (
    Delivery,
    NewWebhook,
    create_webhook,
    delete_webhook,
    enqueue_events,
    list_deliveries,
    list_webhooks,
)
from corral.errors import InvalidInput
from corral.governance.audit import read_entries
from corral.store import Store
from corral.testing import FakeClock

from .sources import make_approval, open_breaker

pytestmark = pytest.mark.timeout(60)


async def subscribe(
    store: Store,
    clock: FakeClock,
    *types: str,
    tenant: str = "default",
    url: str = "https://hooks.example.com/corral",
) -> NewWebhook:
    return await store.run_script(
        lambda d: create_webhook(
            tenant=tenant,
            url=url,
            event_types=types or ("approval.requested",),
            actor="ada",
            now=clock.now(),
            dialect=d,
        )
    )


async def enqueue(store: Store, clock: FakeClock) -> int:
    now = clock.now()
    return await store.run_script(lambda d: enqueue_events(now=now, dialect=d))


async def deliveries(store: Store, made: NewWebhook) -> list[Delivery]:
    return await store.read_script(lambda d: list_deliveries(made.webhook.webhook_id))


async def test_subscriptions_check_their_url_and_types(store: Store, clock: FakeClock) -> None:
    made = await subscribe(store, clock, "run.failed", "approval.requested")
    assert made.secret.startswith("whsec_")
    assert len(made.secret) > 40
    assert made.webhook.event_types == ("run.failed", "approval.requested")
    listed = await store.read_script(lambda d: list_webhooks("default"))
    assert listed == [made.webhook]
    audit = await store.read_script(lambda d: read_entries("default"))
    assert [(e.kind, e.subject) for e in audit] == [
        ("webhook.created", f"webhook:{made.webhook.webhook_id}")
    ]
    assert made.secret not in audit[0].decision

    for url, why in [
        ("ftp://files.example.com/x", "must start with http:// or https://"),
        ("file:///etc/passwd", "must start with http:// or https://"),
        ("hooks.example.com/corral", "must start with http:// or https://"),
        ("https:///no-host", "needs a host"),
    ]:
        with pytest.raises(InvalidInput, match=why):
            await subscribe(store, clock, url=url)
    with pytest.raises(InvalidInput, match=r"unknown event type 'run\.updated'"):
        await subscribe(store, clock, "run.updated")


async def test_overlapping_scans_enqueue_each_event_once(store: Store, clock: FakeClock) -> None:
    made = await subscribe(store, clock)
    await make_approval(store, at=clock.now(), run_id="r1")
    assert await enqueue(store, clock) == 1
    clock.advance(1)
    assert await enqueue(store, clock) == 0  # r1 is read again (the lookback), not added again
    assert [d.event_type for d in await deliveries(store, made)] == ["approval.requested"]


async def test_an_event_committed_late_is_not_lost(store: Store, clock: FakeClock) -> None:
    """On PostgreSQL a transaction stamped before a scan may commit after it: the next scan
    reads back `LOOKBACK` seconds and finds it."""
    made = await subscribe(store, clock)
    clock.advance(10)
    await enqueue(store, clock)
    # Stamped 5 s before the scan above, visible only now.
    await make_approval(store, at=clock.now() - 5, run_id="late")
    # Stamped further back than any scan reads: out of reach (the documented bound).
    await make_approval(store, at=clock.now() - LOOKBACK - 5, run_id="too-late")
    clock.advance(1)
    assert await enqueue(store, clock) == 1
    found = await deliveries(store, made)
    assert len(found) == 1
    assert '"run_id":"late"' in found[0].body


async def test_events_go_to_the_subscriptions_that_want_them(
    store: Store, clock: FakeClock
) -> None:
    ours = await subscribe(store, clock, "approval.requested", "breaker.opened")
    theirs = await subscribe(store, clock, "breaker.opened", tenant="acme")
    failures_only = await subscribe(store, clock, "run.failed")
    await make_approval(store, at=clock.now(), run_id="r1")
    await make_approval(store, at=clock.now(), tenant="acme", run_id="r2")
    await open_breaker(store, at=clock.now())
    clock.advance(1)
    later = await subscribe(store, clock, "approval.requested", "breaker.opened")
    assert await enqueue(store, clock) == 3

    assert sorted(d.event_type for d in await deliveries(store, ours)) == [
        "approval.requested",
        "breaker.opened",
    ]
    acme = await deliveries(store, theirs)
    assert [(d.event_type, d.tenant) for d in acme] == [("breaker.opened", "acme")]
    assert '"tenant":"acme"' in acme[0].body
    assert await deliveries(store, failures_only) == []
    assert await deliveries(store, later) == []  # subscribed after the events happened


async def test_removing_a_subscription_removes_its_deliveries(
    store: Store, clock: FakeClock
) -> None:
    made = await subscribe(store, clock)
    await make_approval(store, at=clock.now())
    await enqueue(store, clock)
    webhook_id = made.webhook.webhook_id
    removed = await store.run_script(
        lambda d: delete_webhook("default", webhook_id, actor="ada", now=clock.now(), dialect=d)
    )
    assert removed == made.webhook
    assert await deliveries(store, made) == []
    again = await store.run_script(
        lambda d: delete_webhook("default", webhook_id, actor="ada", now=clock.now(), dialect=d)
    )
    assert again is None
    other_tenant = await subscribe(store, clock, tenant="acme")
    refused = await store.run_script(
        lambda d: delete_webhook(
            "default", other_tenant.webhook.webhook_id, actor="ada", now=clock.now(), dialect=d
        )
    )
    assert refused is None
