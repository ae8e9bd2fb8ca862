"""Webhooks: a tenant's subscriptions to events, an outbox of deliveries, signed delivery with
retries.

A subscription (`create_webhook`) names a URL, the event types to send there
(`corral.control.events.NOTIFICATION_TYPES`) and holds a secret that signs every delivery; the
secret is shown to its maker once. A dispatcher (`corral.control.dispatcher.run_dispatcher`,
which the server runs in the background; one round is `dispatch_once`) then repeats:

1. **Enqueue** (`enqueue_events`): read the events since the last scan, from `LOOKBACK` seconds
   before it (transactions commit out of order), and insert one delivery per event and
   matching active subscription. A delivery's id is derived from the subscription and the
   event, and the insert is `ON CONFLICT DO NOTHING`, so reading an event again adds nothing.
2. **Claim** (`claim_deliveries`): take the due deliveries for `CLAIM_TTL` seconds, by a
   compare-and-set (and `FOR UPDATE SKIP LOCKED` on PostgreSQL), so of two servers only one
   sends a delivery. A claim that lapses (its server died mid-send) is taken again: delivery is
   *at least once*, and receivers drop duplicates by the `Corral-Event-Id` header.
3. **Send** (`dispatcher.send_delivery`) and **record** (`record_attempt`): a 2xx answer
   delivers it. Network errors, timeouts, 408, 429 and 5xx are retried after an exponential
   backoff with jitter (`dispatcher.retry_delay`), or after the answer's `Retry-After`, up to
   `dispatcher.MAX_ATTEMPTS`; then the delivery is dead. Any other answer (a 3xx: redirects
   are not followed; a 4xx) is dead at once, since sending it again would get the same answer.
   Every attempt is recorded.

A subscription may point anywhere its tenant's admin chooses, including hosts inside the
network the server runs in: only admins make them, and only http and https URLs are accepted.

How deliveries are sent and signed, and how a receiver checks them: `corral.control.dispatcher`
(its docstring).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from corral.control.events import (
    LOOKBACK,
    NOTIFICATION_TYPES,
    Event,
    EventType,
    check_types,
    detect_events,
)
from corral.errors import InvalidInput
from corral.governance.audit import AuditEntry, append
from corral.store.scripts import Dialect, Script, Statement

log = logging.getLogger("corral.webhooks")

DeliveryStatus = Literal["pending", "delivered", "dead"]
DELIVERY_STATUSES: Final[tuple[DeliveryStatus, ...]] = ("pending", "delivered", "dead")

CLAIM_TTL: Final = 120.0
"""Seconds a dispatcher holds a claimed delivery; another takes it over after that."""
MAX_WEBHOOKS: Final = 100
"""Subscriptions per tenant."""
MAX_SCAN_SPAN: Final = 3600.0
"""The longest window one enqueueing scan reads; a scanner that is behind catches up in steps."""
MAX_CATCH_UP: Final = 86400.0
"""A scanner never reads further back than this: older events are not worth notifying."""
SCANNER: Final = "webhooks"
"""The name of the webhook scanner's row in `event_scans`."""

_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://corral.dev/webhooks")
_WEBHOOK_COLUMNS = (
    "webhook_id, tenant, url, event_types, description, active, created_at, created_by"
)
_DELIVERY_COLUMNS = (
    "delivery_id, webhook_id, tenant, event_id, event_type, body, status, attempts, created_at,"
    " next_attempt_at, last_status, last_error, finished_at"
)


# -- records -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription (never its secret)."""

    webhook_id: str
    tenant: str
    url: str
    event_types: tuple[EventType, ...]
    description: str
    active: bool
    created_at: float
    created_by: str


@dataclass(frozen=True, slots=True)
class NewWebhook:
    """A subscription just made, with the only copy of its secret its maker gets."""

    webhook: Webhook
    secret: str


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at a delivery: the HTTP status, or the error that stopped it."""

    attempt: int
    at: float
    status_code: int | None
    error: str | None
    next_attempt_at: float | None
    """When the next try is due; None if this was the last."""


@dataclass(frozen=True, slots=True)
class Delivery:
    """An event on its way to one subscription."""

    delivery_id: str
    webhook_id: str
    tenant: str
    event_id: str
    event_type: str
    body: str
    """The JSON sent, the same bytes on every attempt."""
    status: DeliveryStatus
    attempts: int
    created_at: float
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    finished_at: float | None
    attempt_log: tuple[Attempt, ...] = ()


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery a dispatcher has claimed, with what it needs to send it."""

    delivery_id: str
    event_id: str
    event_type: str
    body: str
    attempt: int
    url: str
    secret: str
    claimer: str


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an attempt came to, and what happens next."""

    at: float
    status: DeliveryStatus
    status_code: int | None = None
    error: str | None = None
    next_attempt_at: float | None = None


# -- subscriptions -----------------------------------------------------------------------------


def check_url(url: str) -> str:
    """`url` if it is an absolute http or https URL; `InvalidInput` saying why not otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https"):
        shown = parts.scheme or "none"
        raise InvalidInput(
            f"a webhook URL must start with http:// or https:// (its scheme is {shown}): {url!r}",
            url=url,
        )
    if not parts.hostname:
        raise InvalidInput(f"a webhook URL needs a host: {url!r}", url=url)
    if any(char.isspace() for char in url.strip()):
        raise InvalidInput(f"a webhook URL cannot contain spaces: {url!r}", url=url)
    return url.strip()


def create_webhook(
    *,
    tenant: str,
    url: str,
    event_types: Iterable[str],
    description: str = "",
    actor: str,
    now: float,
    dialect: Dialect,
) -> Script[NewWebhook]:
    """Subscribe `url` to `event_types` in `tenant` (audited as `webhook.created`)."""
    target = check_url(url)
    try:
        types = tuple(check_types(event_types, allowed=NOTIFICATION_TYPES))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if not types:
        raise InvalidInput(f"subscribe to at least one event type: {', '.join(NOTIFICATION_TYPES)}")
    count = yield Statement("SELECT count(*) FROM webhooks WHERE tenant = ?", (tenant,))
    if int(count.scalar() or 0) >= MAX_WEBHOOKS:
        raise InvalidInput(
            f"tenant {tenant!r} has {MAX_WEBHOOKS} webhooks already: remove one first",
            tenant=tenant,
        )
    webhook = Webhook(
        webhook_id=f"wh_{secrets.token_hex(8)}",
        tenant=tenant,
        url=target,
        event_types=types,
        description=description,
        active=True,
        created_at=now,
        created_by=actor,
    )
    secret = f"whsec_{secrets.token_urlsafe(32)}"
    yield Statement(
        f"INSERT INTO webhooks ({_WEBHOOK_COLUMNS}, secret) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?)",
        (
            webhook.webhook_id,
            tenant,
            target,
            json.dumps(list(types)),
            description,
            now,
            actor,
            secret,
        ),
    )
    yield from append(
        tenant,
        AuditEntry(
            kind="webhook.created",
            actor=actor,
            subject=f"webhook:{webhook.webhook_id}",
            decision={"url": target, "event_types": list(types)},
        ),
        at=now,
        dialect=dialect,
    )
    return NewWebhook(webhook=webhook, secret=secret)


def get_webhook(tenant: str, webhook_id: str) -> Script[Webhook | None]:
    """The subscription `webhook_id` of `tenant`; None if `tenant` has no such one."""
    found = yield Statement(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE webhook_id = ? AND tenant = ?",
        (webhook_id, tenant),
    )
    row = found.one()
    return None if row is None else _webhook(row)


def list_webhooks(tenant: str) -> Script[list[Webhook]]:
    """The tenant's subscriptions, oldest first (at most `MAX_WEBHOOKS`)."""
    found = yield Statement(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE tenant = ? ORDER BY created_at, webhook_id",
        (tenant,),
    )
    return [_webhook(row) for row in found.rows]


def delete_webhook(
    tenant: str, webhook_id: str, *, actor: str, now: float, dialect: Dialect
) -> Script[Webhook | None]:
    """Remove a subscription with its deliveries and their attempts (audited as
    `webhook.deleted`); None if `tenant` has no such one."""
    found = yield from get_webhook(tenant, webhook_id)
    if found is None:
        return None
    yield Statement(
        "DELETE FROM webhook_attempts WHERE delivery_id IN"
        " (SELECT delivery_id FROM webhook_deliveries WHERE webhook_id = ?)",
        (webhook_id,),
    )
    yield Statement("DELETE FROM webhook_deliveries WHERE webhook_id = ?", (webhook_id,))
    yield Statement("DELETE FROM webhooks WHERE webhook_id = ?", (webhook_id,))
    yield from append(
        tenant,
        AuditEntry(
            kind="webhook.deleted",
            actor=actor,
            subject=f"webhook:{webhook_id}",
            decision={"url": found.url},
        ),
        at=now,
        dialect=dialect,
    )
    return found


def set_webhook_active(
    tenant: str, webhook_id: str, active: bool, *, actor: str, now: float, dialect: Dialect
) -> Script[Webhook | None]:
    """Pause (`active=False`) or resume a subscription (audited as `webhook.paused` or
    `webhook.resumed` when it changes); None if `tenant` has no such one.

    A paused subscription gets no new deliveries and its pending ones wait (they are not
    claimed); on resume they are sent. Events of the time it was paused are not, save those of
    the last `LOOKBACK` seconds before it resumes (the scan reads that far back).
    """
    found = yield from get_webhook(tenant, webhook_id)
    if found is None or found.active == active:
        return found
    yield Statement(
        "UPDATE webhooks SET active = ? WHERE webhook_id = ? AND tenant = ?",
        (1 if active else 0, webhook_id, tenant),
    )
    yield from append(
        tenant,
        AuditEntry(
            kind="webhook.resumed" if active else "webhook.paused",
            actor=actor,
            subject=f"webhook:{webhook_id}",
            decision={"url": found.url},
        ),
        at=now,
        dialect=dialect,
    )
    return dataclasses.replace(found, active=active)


def _webhook(row: Sequence[Any]) -> Webhook:
    return Webhook(
        webhook_id=row[0],
        tenant=row[1],
        url=row[2],
        event_types=tuple(json.loads(row[3])),
        description=row[4],
        active=bool(row[5]),
        created_at=float(row[6]),
        created_by=row[7],
    )


# -- the outbox --------------------------------------------------------------------------------


def delivery_id_for(webhook_id: str, event_id: str) -> str:
    """The id of `event_id`'s delivery to `webhook_id`: the same however often it is enqueued."""
    return uuid.uuid5(_NAMESPACE, f"{webhook_id}|{event_id}").hex


def _delivery_row(webhook_id: str, tenant: str, event: Event, now: float) -> tuple[Any, ...]:
    body = json.dumps(event.body(tenant), separators=(",", ":"), ensure_ascii=False)
    return (
        delivery_id_for(webhook_id, event.event_id),
        webhook_id,
        tenant,
        event.event_id,
        event.type,
        body,
        now,
        now,
    )


_INSERT_DELIVERY = (
    "INSERT INTO webhook_deliveries (delivery_id, webhook_id, tenant, event_id, event_type, body,"
    " status, attempts, created_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0, ?, ?)"
    " ON CONFLICT DO NOTHING"
)


def enqueue_events(*, now: float, dialect: Dialect, scanner: str = SCANNER) -> Script[int]:
    """Add a delivery for every event since the last scan (read from `LOOKBACK` before it) and
    every active subscription that wants it and existed when it happened; return how many were
    new. Breaker events go to subscriptions in every tenant."""
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    found = yield Statement(
        f"SELECT scanned_to FROM event_scans WHERE scanner = ?{lock}", (scanner,)
    )
    last = found.scalar()
    scanned_to = now if last is None else float(last)
    since = max(scanned_to - LOOKBACK, now - MAX_CATCH_UP)
    until = min(now, since + MAX_SCAN_SPAN)
    subscribed = yield Statement(
        f"SELECT {_WEBHOOK_COLUMNS} FROM webhooks WHERE active = 1 ORDER BY webhook_id"
    )
    webhooks = [_webhook(row) for row in subscribed.rows]
    added = 0
    if webhooks:
        wanted = {name for webhook in webhooks for name in webhook.event_types}
        events = yield from detect_events(since=since, until=until, now=now, types=wanted)
        rows = [
            _delivery_row(webhook.webhook_id, webhook.tenant, event, now)
            for event in events
            for webhook in webhooks
            if event.type in webhook.event_types
            and event.tenant in (None, webhook.tenant)
            and event.time >= webhook.created_at
        ]
        if rows:
            inserted = yield Statement(_INSERT_DELIVERY, rows, many=True)
            added = max(inserted.rowcount, 0)
    yield Statement(
        "INSERT INTO event_scans (scanner, scanned_to) VALUES (?, ?) ON CONFLICT (scanner)"
        " DO UPDATE SET scanned_to = excluded.scanned_to"
        " WHERE event_scans.scanned_to < excluded.scanned_to",
        (scanner, until),
    )
    return added


def enqueue_test(webhook: Webhook, *, actor: str, now: float) -> Script[Delivery]:
    """Queue a `webhook.test` event for `webhook` alone; return its delivery."""
    event = Event(
        event_id=f"webhook.test:{uuid.uuid4()}",
        type="webhook.test",
        tenant=webhook.tenant,
        time=now,
        data={
            "webhook_id": webhook.webhook_id,
            "requested_by": actor,
            "message": "a test event from Corral: this webhook is reachable",
        },
    )
    row = _delivery_row(webhook.webhook_id, webhook.tenant, event, now)
    yield Statement(_INSERT_DELIVERY, row)
    delivery = yield from get_delivery(webhook.tenant, str(row[0]))
    assert delivery is not None
    return delivery


def get_delivery(tenant: str, delivery_id: str) -> Script[Delivery | None]:
    """A delivery of `tenant`, with its attempts."""
    found = yield Statement(
        f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE delivery_id = ? AND tenant = ?",
        (delivery_id, tenant),
    )
    row = found.one()
    if row is None:
        return None
    with_attempts = yield from _with_attempts([_delivery(row)])
    return with_attempts[0]


def list_deliveries(
    webhook_id: str,
    *,
    status: DeliveryStatus | None = None,
    after: tuple[float, str] | None = None,
    limit: int = 50,
) -> Script[list[Delivery]]:
    """A subscription's deliveries, newest first, with their attempts; `after` (the
    `created_at` and `delivery_id` of a page's last delivery) continues a list."""
    sql = f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = ?"
    params: tuple[Any, ...] = (webhook_id,)
    if status is not None:
        sql += " AND status = ?"
        params += (status,)
    if after is not None:
        sql += " AND (created_at < ? OR (created_at = ? AND delivery_id < ?))"
        params += (after[0], after[0], after[1])
    found = yield Statement(
        sql + " ORDER BY created_at DESC, delivery_id DESC LIMIT ?", (*params, limit)
    )
    return (yield from _with_attempts([_delivery(row) for row in found.rows]))


def _with_attempts(deliveries: list[Delivery]) -> Script[list[Delivery]]:
    if not deliveries:
        return deliveries
    marks = ", ".join("?" for _ in deliveries)
    found = yield Statement(
        "SELECT delivery_id, attempt, at, status_code, error, next_attempt_at FROM"
        f" webhook_attempts WHERE delivery_id IN ({marks}) ORDER BY delivery_id, attempt",
        [delivery.delivery_id for delivery in deliveries],
    )
    attempts: dict[str, list[Attempt]] = {}
    for row in found.rows:
        attempts.setdefault(row[0], []).append(
            Attempt(
                attempt=int(row[1]),
                at=float(row[2]),
                status_code=None if row[3] is None else int(row[3]),
                error=row[4],
                next_attempt_at=None if row[5] is None else float(row[5]),
            )
        )
    return [
        dataclasses.replace(d, attempt_log=tuple(attempts.get(d.delivery_id, ())))
        for d in deliveries
    ]


def _delivery(row: Sequence[Any]) -> Delivery:
    return Delivery(
        delivery_id=row[0],
        webhook_id=row[1],
        tenant=row[2],
        event_id=row[3],
        event_type=row[4],
        body=row[5],
        status=row[6],
        attempts=int(row[7]),
        created_at=float(row[8]),
        next_attempt_at=None if row[9] is None else float(row[9]),
        last_status=None if row[10] is None else int(row[10]),
        last_error=row[11],
        finished_at=None if row[12] is None else float(row[12]),
    )


def claim_deliveries(
    *, now: float, claimer: str, limit: int, dialect: Dialect, ttl: float = CLAIM_TTL
) -> Script[list[Claimed]]:
    """Claim up to `limit` due deliveries of active subscriptions for `ttl` seconds as
    `claimer`. Each claim is a compare-and-set on the delivery's row, so of two dispatchers
    only one gets a delivery; PostgreSQL's `SKIP LOCKED` keeps them from waiting on each other.
    """
    skip = " FOR UPDATE SKIP LOCKED" if dialect == "postgresql" else ""
    due = yield Statement(
        "SELECT delivery_id FROM webhook_deliveries WHERE status = 'pending'"
        " AND next_attempt_at <= ? AND (claimed_until IS NULL OR claimed_until <= ?)"
        " AND webhook_id IN (SELECT webhook_id FROM webhooks WHERE active = 1)"
        f" ORDER BY next_attempt_at, delivery_id LIMIT ?{skip}",
        (now, now, limit),
    )
    for (delivery_id,) in due.rows:
        yield Statement(
            "UPDATE webhook_deliveries SET claimed_by = ?, claimed_until = ?,"
            " attempts = attempts + 1 WHERE delivery_id = ? AND status = 'pending'"
            " AND (claimed_until IS NULL OR claimed_until <= ?)",
            (claimer, now + ttl, delivery_id, now),
        )
    claimed = yield Statement(
        "SELECT d.delivery_id, d.event_id, d.event_type, d.body, d.attempts, w.url, w.secret"
        " FROM webhook_deliveries d JOIN webhooks w ON w.webhook_id = d.webhook_id"
        " WHERE d.claimed_by = ? AND d.status = 'pending' ORDER BY d.next_attempt_at",
        (claimer,),
    )
    return [
        Claimed(
            delivery_id=row[0],
            event_id=row[1],
            event_type=row[2],
            body=row[3],
            attempt=int(row[4]),
            url=row[5],
            secret=row[6],
            claimer=claimer,
        )
        for row in claimed.rows
    ]


def record_attempt(claimed: Claimed, outcome: Outcome) -> Script[bool]:
    """Record an attempt and where the delivery stands; False if the claim had lapsed and
    another dispatcher has the delivery now (the attempt is recorded all the same), or if the
    delivery was removed with its webhook meanwhile (then nothing is recorded)."""
    exists = yield Statement(
        "SELECT 1 FROM webhook_deliveries WHERE delivery_id = ?", (claimed.delivery_id,)
    )
    if exists.one() is None:
        return False
    yield Statement(
        "INSERT INTO webhook_attempts (delivery_id, attempt, at, status_code, error,"
        " next_attempt_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (
            claimed.delivery_id,
            claimed.attempt,
            outcome.at,
            outcome.status_code,
            outcome.error,
            outcome.next_attempt_at,
        ),
    )
    finished = None if outcome.status == "pending" else outcome.at
    changed = yield Statement(
        "UPDATE webhook_deliveries SET status = ?, next_attempt_at = ?, last_status = ?,"
        " last_error = ?, finished_at = ?, claimed_by = NULL, claimed_until = NULL"
        " WHERE delivery_id = ? AND claimed_by = ?",
        (
            outcome.status,
            outcome.next_attempt_at,
            outcome.status_code,
            outcome.error,
            finished,
            claimed.delivery_id,
            claimed.claimer,
        ),
    )
    return changed.rowcount == 1


__all__ = [
    "CLAIM_TTL",
    "DELIVERY_STATUSES",
    "MAX_WEBHOOKS",
    "Attempt",
    "Claimed",
    "Delivery",
    "DeliveryStatus",
    "NewWebhook",
    "Outcome",
    "Webhook",
    "check_url",
    "claim_deliveries",
    "create_webhook",
    "delete_webhook",
    "delivery_id_for",
    "enqueue_events",
    "enqueue_test",
    "get_delivery",
    "get_webhook",
    "list_deliveries",
    "list_webhooks",
    "record_attempt",
]
