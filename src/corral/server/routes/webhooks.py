"""Webhooks of the caller's tenant: subscribe a URL to events (its signing secret is answered
once), list, remove, see each delivery and its attempts, send a test event. Admins only.

How deliveries are signed, retried and verified: `corral.control.webhooks` and
`corral.control.dispatcher`.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from corral.control.webhooks import (
    Delivery,
    DeliveryStatus,
    Webhook,
    create_webhook,
    delete_webhook,
    enqueue_test,
    get_webhook,
    list_deliveries,
    list_webhooks,
    set_webhook_active,
)
from corral.server.pagination import DEFAULT_LIMIT, MAX_LIMIT
from corral.server.problems import not_found
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.shapes import Page, moment
from corral.server.state import ServerState, state_of

router = APIRouter(tags=["webhooks"])

WebhookId = Annotated[str, Path(min_length=1, max_length=64, description="A webhook's id.")]
NotificationType = Literal[
    "approval.requested", "approval.expiring", "run.failed", "budget.alert", "breaker.opened"
]
"""The event types a webhook can subscribe to (`corral.control.events.NOTIFICATION_TYPES`)."""


class CreateWebhook(BaseModel):
    """A subscription: where to POST which events."""

    model_config = ConfigDict(extra="forbid", strict=True)

    url: str = Field(
        min_length=1, max_length=2000, description="An http:// or https:// URL to POST events to."
    )
    events: list[NotificationType] = Field(min_length=1, max_length=20)
    description: str = Field(default="", max_length=500)


class UpdateWebhook(BaseModel):
    """What to change in a subscription."""

    model_config = ConfigDict(extra="forbid", strict=True)

    active: bool = Field(
        description="false pauses it (no new deliveries; pending ones wait), true resumes it."
    )


class WebhookOut(BaseModel):
    webhook_id: str
    url: str
    events: list[str]
    description: str
    active: bool
    created_at: dt.datetime
    created_by: str

    @staticmethod
    def of(webhook: Webhook) -> WebhookOut:
        return WebhookOut(
            webhook_id=webhook.webhook_id,
            url=webhook.url,
            events=list(webhook.event_types),
            description=webhook.description,
            active=webhook.active,
            created_at=dt.datetime.fromtimestamp(webhook.created_at, tz=dt.UTC),
            created_by=webhook.created_by,
        )


class NewWebhookOut(WebhookOut):
    secret: str = Field(
        description="Signs every delivery (`Corral-Signature`): shown this once, never again."
    )


class AttemptOut(BaseModel):
    attempt: int
    at: dt.datetime
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered.")
    error: str | None = None
    next_attempt_at: dt.datetime | None = Field(
        default=None, description="When it is tried again (null: it is not)."
    )


class DeliveryOut(BaseModel):
    delivery_id: str
    webhook_id: str
    event_id: str
    event_type: str
    status: str = Field(description="pending (retrying until delivered), delivered or dead.")
    attempts: int
    event: Any = Field(default=None, description="The JSON body delivered.")
    created_at: dt.datetime
    next_attempt_at: dt.datetime | None = None
    last_status: int | None = None
    last_error: str | None = None
    finished_at: dt.datetime | None = None
    attempt_log: list[AttemptOut] = Field(description="Every attempt, first to last.")

    @staticmethod
    def of(delivery: Delivery) -> DeliveryOut:
        return DeliveryOut(
            delivery_id=delivery.delivery_id,
            webhook_id=delivery.webhook_id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status,
            attempts=delivery.attempts,
            event=json.loads(delivery.body),
            created_at=dt.datetime.fromtimestamp(delivery.created_at, tz=dt.UTC),
            next_attempt_at=moment(delivery.next_attempt_at),
            last_status=delivery.last_status,
            last_error=delivery.last_error,
            finished_at=moment(delivery.finished_at),
            attempt_log=[
                AttemptOut(
                    attempt=attempt.attempt,
                    at=dt.datetime.fromtimestamp(attempt.at, tz=dt.UTC),
                    status_code=attempt.status_code,
                    error=attempt.error,
                    next_attempt_at=moment(attempt.next_attempt_at),
                )
                for attempt in delivery.attempt_log
            ],
        )


async def webhook_of(state: ServerState, caller: Caller, webhook_id: str) -> Webhook:
    """The caller's tenant's webhook: another tenant's is "not found", like none."""
    found = await state.store.read_script(lambda d: get_webhook(caller.tenant, webhook_id))
    if found is None:
        raise not_found("such webhook")
    return found


@route(
    router,
    "POST",
    "/webhooks",
    "admin",
    status_code=201,
    response_model=NewWebhookOut,
    summary="Subscribe a URL to events",
)
async def subscribe(body: CreateWebhook, caller: CallerDep, request: Request) -> NewWebhookOut:
    """POST `events` of the caller's tenant to `url` (and `breaker.opened` of every tenant: the
    breakers are shared). `secret` is in this answer only: store it now."""
    state = state_of(request)
    now = state.now()
    made = await state.store.run_script(
        lambda d: create_webhook(
            tenant=caller.tenant,
            url=body.url,
            event_types=body.events,
            description=body.description,
            actor=caller.principal,
            now=now,
            dialect=d,
        )
    )
    return NewWebhookOut(**WebhookOut.of(made.webhook).model_dump(), secret=made.secret)


@route(router, "GET", "/webhooks", "admin", response_model=list[WebhookOut], summary="Webhooks")
async def webhooks(caller: CallerDep, request: Request) -> list[WebhookOut]:
    """The tenant's webhooks, oldest first (at most 100; never their secrets)."""
    found = await state_of(request).store.read_script(lambda d: list_webhooks(caller.tenant))
    return [WebhookOut.of(webhook) for webhook in found]


@route(
    router,
    "GET",
    "/webhooks/{webhook_id}",
    "admin",
    response_model=WebhookOut,
    summary="Get a webhook",
)
async def get_one(webhook_id: WebhookId, caller: CallerDep, request: Request) -> WebhookOut:
    return WebhookOut.of(await webhook_of(state_of(request), caller, webhook_id))


@route(
    router,
    "DELETE",
    "/webhooks/{webhook_id}",
    "admin",
    response_model=WebhookOut,
    summary="Remove a webhook",
)
async def remove(webhook_id: WebhookId, caller: CallerDep, request: Request) -> WebhookOut:
    """Stop sending to it; its deliveries, sent or waiting, are removed with it."""
    state = state_of(request)
    now = state.now()
    removed = await state.store.run_script(
        lambda d: delete_webhook(
            caller.tenant, webhook_id, actor=caller.principal, now=now, dialect=d
        )
    )
    if removed is None:
        raise not_found("such webhook")
    return WebhookOut.of(removed)


@route(
    router,
    "PATCH",
    "/webhooks/{webhook_id}",
    "admin",
    response_model=WebhookOut,
    summary="Pause or resume a webhook",
)
async def update(
    webhook_id: WebhookId, body: UpdateWebhook, caller: CallerDep, request: Request
) -> WebhookOut:
    """Pause a webhook (`{"active": false}`): it gets no new deliveries, and its pending ones wait
    until it is resumed. Events of the time it was paused are not sent, save those of the
    minute before it resumes (the event scan reads a minute back)."""
    state = state_of(request)
    now = state.now()
    changed = await state.store.run_script(
        lambda d: set_webhook_active(
            caller.tenant, webhook_id, body.active, actor=caller.principal, now=now, dialect=d
        )
    )
    if changed is None:
        raise not_found("such webhook")
    return WebhookOut.of(changed)


@route(
    router,
    "GET",
    "/webhooks/{webhook_id}/deliveries",
    "admin",
    response_model=Page[DeliveryOut],
    summary="A webhook's deliveries",
)
async def deliveries(
    webhook_id: WebhookId,
    caller: CallerDep,
    request: Request,
    status: Annotated[str | None, Query(pattern="^(pending|delivered|dead)$")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Page[DeliveryOut]:
    """Newest first, each with every attempt (status or error, and when)."""
    state = state_of(request)
    await webhook_of(state, caller, webhook_id)
    scope = f"deliveries|{caller.tenant}|{webhook_id}|{status}"
    after = None
    if cursor is not None:
        position = state.cursors.read(cursor, scope=scope, now=state.now())
        after = (float(position["t"]), str(position["id"]))
    wanted = cast(DeliveryStatus | None, status)
    found = await state.store.read_script(
        lambda d: list_deliveries(webhook_id, status=wanted, after=after, limit=limit + 1)
    )
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        last = found[-1]
        next_cursor = state.cursors.make(
            {"t": last.created_at, "id": last.delivery_id}, scope=scope, now=state.now()
        )
    return Page[DeliveryOut](items=[DeliveryOut.of(d) for d in found], next_cursor=next_cursor)


@route(
    router,
    "POST",
    "/webhooks/{webhook_id}/test",
    "admin",
    status_code=202,
    response_model=DeliveryOut,
    summary="Send a test event",
)
async def send_test(webhook_id: WebhookId, caller: CallerDep, request: Request) -> DeliveryOut:
    """Queue a `webhook.test` event for this webhook alone; the dispatcher sends it within a
    second or so. Follow it in the webhook's deliveries."""
    state = state_of(request)
    webhook = await webhook_of(state, caller, webhook_id)
    now = state.now()
    queued = await state.store.run_script(
        lambda d: enqueue_test(webhook, actor=caller.principal, now=now)
    )
    return DeliveryOut.of(queued)


__all__ = ["router"]
