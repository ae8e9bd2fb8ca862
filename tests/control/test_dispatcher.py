"""The webhook dispatcher against a real receiver on 127.0.0.1, on virtual time: signed
deliveries; retries with backoff and jitter on 5xx, 429 (`Retry-After`) and network errors, up
to a limit; no retries for answers that would not change; two dispatchers never send a delivery
twice; a claim that lapses is sent again."""

from __future__ import annotations

import asyncio
import email.utils
import json
import random

import httpx2
import pytest

from corral.control.dispatcher import (
    BASE_DELAY,
    MAX_ATTEMPTS,
    MAX_DELAY,
    dispatch_once,
    parse_retry_after,
    run_dispatcher,
    sign,
    verify_signature,
)
from corral.control.webhooks import (
    CLAIM_TTL,
    Delivery,
    NewWebhook,
    claim_deliveries,
    create_webhook,
    list_deliveries,
)
from corral.store import Store, open_store
from corral.testing import FakeClock

from .receiver import Receiver, closed_port_url, receiving
from .sources import make_approval

pytestmark = pytest.mark.timeout(60)


async def subscribe(store: Store, clock: FakeClock, url: str) -> NewWebhook:
    return await store.run_script(
        lambda d: create_webhook(
            tenant="default",
            url=url,
            event_types=["approval.requested"],
            actor="ada",
            now=clock.now(),
            dialect=d,
        )
    )


async def the_delivery(store: Store, made: NewWebhook) -> Delivery:
    found = await store.read_script(lambda d: list_deliveries(made.webhook.webhook_id))
    assert len(found) == 1
    return found[0]


@pytest.fixture
async def receiver() -> object:
    async with receiving() as running:
        yield running


@pytest.fixture
async def http() -> object:
    async with httpx2.AsyncClient(follow_redirects=False) as client:
        yield client


async def test_a_delivery_is_signed_and_sent_once(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    made = await subscribe(store, clock, receiver.url())
    approval = await make_approval(store, at=clock.now())
    report = await dispatch_once(store, clock, http)
    assert (report.enqueued, report.delivered) == (1, 1)
    clock.advance(1)
    assert await dispatch_once(store, clock, http) == type(report)()  # nothing new, nothing due

    [got] = receiver.received
    event_id = f"approval.requested:{approval.approval_id}"
    assert got.headers["corral-event-id"] == event_id
    assert got.headers["corral-event-type"] == "approval.requested"
    assert got.headers["content-type"] == "application/json"
    assert got.headers["corral-delivery-attempt"] == "1"
    signature = got.headers["corral-signature"]
    assert signature.startswith(f"t={int(clock.now() - 1)},v1=")
    assert verify_signature(made.secret, signature, got.body, now=clock.now())
    body = json.loads(got.body)
    assert (body["id"], body["type"], body["tenant"]) == (event_id, "approval.requested", "default")
    assert body["data"]["link"] == f"/approvals/{approval.approval_id}"

    delivery = await the_delivery(store, made)
    assert (delivery.status, delivery.attempts, delivery.last_status) == ("delivered", 1, 200)
    assert [(a.attempt, a.status_code, a.error) for a in delivery.attempt_log] == [(1, 200, None)]


def test_a_receiver_refuses_forged_tampered_and_replayed_deliveries() -> None:
    secret, body, now = "whsec_test", b'{"id":"x"}', 1_700_000_000.0
    header = sign(secret, int(now), body)
    assert verify_signature(secret, header, body, now=now + 299)
    assert not verify_signature(secret, header, body, now=now + 301)  # replayed too late
    assert not verify_signature(secret, header, body + b" ", now=now)  # body changed
    assert not verify_signature("whsec_other", header, body, now=now)  # another secret
    later = header.replace(f"t={int(now)}", f"t={int(now) + 100}")
    assert not verify_signature(secret, later, body, now=now + 100)  # time changed
    assert not verify_signature(secret, "v1=abc", body, now=now)
    assert not verify_signature(secret, "t=soon,v1=abc", body, now=now)


async def test_server_errors_are_retried_with_backoff_and_jitter(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    made = await subscribe(store, clock, receiver.url())
    await make_approval(store, at=clock.now())
    receiver.plan(500, 502)
    sent_at = clock.now()
    report = await dispatch_once(store, clock, http, rng=random.Random(1))
    assert report.retrying == 1
    first = await the_delivery(store, made)
    assert first.status == "pending"
    assert first.last_status == 500
    assert first.last_error is not None
    assert first.last_error.startswith("HTTP 500: answer 500")
    assert first.next_attempt_at is not None
    wait = first.next_attempt_at - sent_at
    assert BASE_DELAY / 2 <= wait <= BASE_DELAY

    clock.advance(wait - 0.5)
    await dispatch_once(store, clock, http)  # not due yet
    assert len(receiver.received) == 1
    clock.advance(0.5)
    await dispatch_once(store, clock, http, rng=random.Random(1))
    second = await the_delivery(store, made)
    assert second.next_attempt_at is not None
    assert BASE_DELAY <= second.next_attempt_at - clock.now() <= 2 * BASE_DELAY
    clock.advance(2 * BASE_DELAY)
    await dispatch_once(store, clock, http)

    done = await the_delivery(store, made)
    assert (done.status, done.attempts) == ("delivered", 3)
    assert [a.status_code for a in done.attempt_log] == [500, 502, 200]
    assert done.attempt_log[-1].next_attempt_at is None
    assert [r.headers["corral-delivery-attempt"] for r in receiver.received] == ["1", "2", "3"]
    assert len(set(receiver.event_ids)) == 1


async def test_retry_after_is_honoured(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    made = await subscribe(store, clock, receiver.url())
    await make_approval(store, at=clock.now())
    receiver.plan((429, {"Retry-After": "120"}))
    await dispatch_once(store, clock, http)
    limited = await the_delivery(store, made)
    assert limited.next_attempt_at == clock.now() + 120
    clock.advance(119)
    await dispatch_once(store, clock, http)
    assert len(receiver.received) == 1
    clock.advance(1)
    await dispatch_once(store, clock, http)
    assert (await the_delivery(store, made)).status == "delivered"

    when = email.utils.formatdate(1_700_000_300, usegmt=True)
    assert parse_retry_after(when, now=1_700_000_000) == 300
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after("999999999", now=0) == 86400.0


async def test_network_errors_are_retried_until_the_limit(
    store: Store, clock: FakeClock, http: httpx2.AsyncClient
) -> None:
    made = await subscribe(store, clock, closed_port_url())
    await make_approval(store, at=clock.now())
    for attempt in range(1, MAX_ATTEMPTS + 1):
        report = await dispatch_once(store, clock, http)
        assert (report.retrying, report.dead) == ((1, 0) if attempt < MAX_ATTEMPTS else (0, 1))
        clock.advance(MAX_DELAY)
    dead = await the_delivery(store, made)
    assert (dead.status, dead.attempts, dead.next_attempt_at) == ("dead", MAX_ATTEMPTS, None)
    assert dead.finished_at is not None
    assert len(dead.attempt_log) == MAX_ATTEMPTS
    assert all(a.status_code is None and a.error for a in dead.attempt_log)
    assert dead.last_error is not None
    assert "Connect" in dead.last_error
    assert await dispatch_once(store, clock, http) == type(report)()


async def test_answers_that_would_not_change_are_not_retried(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    gone = await subscribe(store, clock, receiver.url("/gone"))
    moved = await subscribe(store, clock, receiver.url("/moved"))
    await make_approval(store, at=clock.now())
    receiver.plan(410, path="/gone")
    receiver.plan((301, {"Location": "https://new.example.com/hook"}), path="/moved")
    report = await dispatch_once(store, clock, http)
    assert report.dead == 2
    answered = {r.path: r for r in receiver.received}
    assert set(answered) == {"/gone", "/moved"}
    dead = [await the_delivery(store, made) for made in (gone, moved)]
    assert [(d.status, d.attempts, d.last_status) for d in dead] == [
        ("dead", 1, 410),
        ("dead", 1, 301),
    ]
    assert dead[0].last_error == "HTTP 410: answer 410"
    assert dead[1].last_error == (
        "HTTP 301: redirects are not followed; point the webhook at https://new.example.com/hook"
    )


async def test_two_dispatchers_send_each_delivery_once(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    await subscribe(store, clock, receiver.url("/a"))
    await subscribe(store, clock, receiver.url("/b"))
    for seq in range(10):
        await make_approval(store, at=clock.now(), step_seq=seq)
    other = open_store(store.url)  # a second server on the same database
    await other.open()
    try:
        reports = await asyncio.gather(
            dispatch_once(store, clock, http, limit=7),
            dispatch_once(other, clock, http, limit=7),
            dispatch_once(store, clock, http, limit=7),
        )
    finally:
        await other.close()
    assert sum(r.delivered for r in reports) == 20
    sent = [(r.path, r.headers["corral-event-id"]) for r in receiver.received]
    assert len(sent) == len(set(sent)) == 20


async def test_a_lapsed_claim_is_sent_again(
    store: Store, clock: FakeClock, receiver: Receiver, http: httpx2.AsyncClient
) -> None:
    made = await subscribe(store, clock, receiver.url())
    await make_approval(store, at=clock.now())
    await dispatch_once(store, clock, http, limit=0)  # enqueue only
    # A server claims it, then dies before sending.
    claimed = await store.run_script(
        lambda d: claim_deliveries(now=clock.now(), claimer="dead-server", limit=10, dialect=d)
    )
    assert len(claimed) == 1
    await dispatch_once(store, clock, http)
    assert receiver.received == []  # still claimed
    clock.advance(CLAIM_TTL)
    await dispatch_once(store, clock, http)
    assert [r.headers["corral-delivery-attempt"] for r in receiver.received] == ["2"]
    assert (await the_delivery(store, made)).status == "delivered"


async def test_the_dispatcher_loop_runs_until_stopped(
    store: Store, clock: FakeClock, receiver: Receiver
) -> None:
    await subscribe(store, clock, receiver.url())
    stop = asyncio.Event()
    loop = asyncio.create_task(run_dispatcher(store, clock, stop=stop, interval=1.0))
    await make_approval(store, at=clock.now())
    for _ in range(200):  # a round per virtual second, until the receiver has it
        clock.advance(1)
        await asyncio.sleep(0.01)
        if receiver.received:
            break
    assert len(receiver.received) == 1
    stop.set()
    await asyncio.wait_for(loop, 5)
