"""`corral webhooks`: send events people act on to a URL (add, list, pause, resume, remove,
deliveries, test).

The server's dispatcher sends them (`corral server`, `corral dev`); these commands manage the
subscriptions in the database, as an admin of the tenant.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from corral import Corral
from corral.cli.display import answer_table, console, shorten, when
from corral.cli.exits import reporting_errors
from corral.cli.remote import Remote, segment
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.control.events import NOTIFICATION_TYPES
from corral.control.webhooks import (
    DELIVERY_STATUSES,
    Delivery,
    DeliveryStatus,
    NewWebhook,
    Webhook,
    create_webhook,
    delete_webhook,
    enqueue_test,
    get_webhook,
    list_deliveries,
    list_webhooks,
    set_webhook_active,
)
from corral.governance.identity import authorize

webhooks_app = typer.Typer(
    help="Webhooks: POST events people act on (approvals waiting or about to expire, failed "
    "runs, budget alerts, breakers that open) to a URL, signed with a secret shown once. The "
    "server (`corral server`, `corral dev`) sends them.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", "-t", help="The webhook's tenant (default: the root --tenant)."),
]
WebhookIdArgument = Annotated[
    str, typer.Argument(help="The webhook's id (from `corral webhooks list`).")
]


def _check_events(values: list[str]) -> list[str]:
    for value in values:
        if value not in NOTIFICATION_TYPES:
            raise typer.BadParameter(
                f"unknown event type {value!r}; use {', '.join(NOTIFICATION_TYPES)}"
            )
    return values


def webhook_json(webhook: Webhook) -> dict[str, Any]:
    return {
        "webhook_id": webhook.webhook_id,
        "tenant": webhook.tenant,
        "url": webhook.url,
        "events": list(webhook.event_types),
        "description": webhook.description,
        "active": webhook.active,
        "created_at": iso(webhook.created_at),
        "created_by": webhook.created_by,
    }


def delivery_json(delivery: Delivery) -> dict[str, Any]:
    return {
        "delivery_id": delivery.delivery_id,
        "webhook_id": delivery.webhook_id,
        "event_id": delivery.event_id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "event": json.loads(delivery.body),
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "last_status": delivery.last_status,
        "last_error": delivery.last_error,
        "finished_at": iso(delivery.finished_at),
        "attempt_log": [
            {
                "attempt": attempt.attempt,
                "at": iso(attempt.at),
                "status_code": attempt.status_code,
                "error": attempt.error,
                "next_attempt_at": iso(attempt.next_attempt_at),
            }
            for attempt in delivery.attempt_log
        ],
    }


@webhooks_app.command(
    "add",
    epilog="Examples:\n\n"
    "  corral webhooks add https://chat.example.com/hooks/corral --event approval.requested"
    " --event approval.expiring\n\n"
    "  corral --tenant acme webhooks add https://tickets.example.com/corral -e run.failed"
    " -e budget.alert --description 'ops tickets'",
)
def add_command(
    ctx: typer.Context,
    url: Annotated[str, typer.Argument(help="Where to POST events: an http:// or https:// URL.")],
    events: Annotated[
        list[str],
        typer.Option(
            "--event",
            "-e",
            callback=_check_events,
            help=f"An event type to send (repeat for more): {', '.join(NOTIFICATION_TYPES)}.",
        ),
    ],
    description: Annotated[str, typer.Option("--description", help="What it is for.")] = "",
    tenant: TenantOption = None,
    json_output: JsonOption = False,
) -> None:
    """Subscribe URL to events of the tenant; print the signing secret once."""
    settings = Settings.of(ctx).in_tenant(tenant)
    if settings.server is not None:
        body = {"url": url, "events": events, "description": description}
        made = _remote(settings, lambda remote: remote.post("/webhooks", body))
        typer.echo(dumps(made) if json_output else made["secret"])
        if not json_output:
            typer.echo(
                f"webhook {made['webhook_id']}: {', '.join(made['events'])} to {made['url']}. "
                "The secret above signs every delivery (Corral-Signature); it is shown this once.",
                err=True,
            )
        return

    async def add() -> NewWebhook:
        async with settings.corral() as corral:
            await _as_admin(corral, settings, "add webhooks")
            now = corral.clock.now()
            return await corral.store.run_script(
                lambda d: create_webhook(
                    tenant=settings.tenant,
                    url=url,
                    event_types=events,
                    description=description,
                    actor=settings.principal,
                    now=now,
                    dialect=d,
                )
            )

    made = run_async(add)
    if json_output:
        typer.echo(dumps({**webhook_json(made.webhook), "secret": made.secret}))
        return
    typer.echo(made.secret)
    typer.echo(
        f"webhook {made.webhook.webhook_id}: {', '.join(made.webhook.event_types)} of tenant "
        f"{made.webhook.tenant!r} to {made.webhook.url}. The secret above signs every delivery "
        "(Corral-Signature); it is shown this once.",
        err=True,
    )


@webhooks_app.command("list", epilog="Example:\n\n  corral webhooks list --tenant acme")
def list_command(
    ctx: typer.Context, tenant: TenantOption = None, json_output: JsonOption = False
) -> None:
    """List the tenant's webhooks (never their secrets)."""
    settings = Settings.of(ctx).in_tenant(tenant)
    if settings.server is not None:
        found = _remote(settings, lambda remote: remote.get("/webhooks"))
        _print_answers(found, json_output, "webhooks", ["webhook_id", "url", "events", "active"])
        return

    async def fetch() -> list[Webhook]:
        async with settings.corral(existing=True) as corral:
            await _as_admin(corral, settings, "list webhooks")
            return await corral.store.read_script(lambda d: list_webhooks(settings.tenant))

    found = run_async(fetch)
    if json_output:
        typer.echo(dumps({"webhooks": [webhook_json(webhook) for webhook in found]}))
        return
    if not found:
        typer.echo(f"no webhooks in tenant {settings.tenant!r}", err=True)
        return
    table = Table(box=None)
    for column in ("webhook", "url", "events", "state", "description", "created"):
        table.add_column(column)
    for webhook in found:
        table.add_row(
            webhook.webhook_id,
            Text(webhook.url),
            ", ".join(webhook.event_types),
            "active" if webhook.active else "paused",
            Text(webhook.description),
            when(webhook.created_at),
        )
    console().print(table)


@webhooks_app.command(
    "pause",
    epilog="Example:\n\n  corral webhooks pause wh_3f1c9a7b2e4d6f80\n\n"
    "Resume it with `corral webhooks resume`.",
)
def pause_command(
    ctx: typer.Context, webhook_id: WebhookIdArgument, tenant: TenantOption = None
) -> None:
    """Stop sending to a webhook (say, while its receiver is down), keeping it and its queue.

    Pending deliveries wait and are sent on resume; events while paused are not queued, save
    those of the last minutes before it resumes.
    """
    _set_active(ctx, webhook_id, tenant, active=False)


@webhooks_app.command("resume", epilog="Example:\n\n  corral webhooks resume wh_3f1c9a7b2e4d6f80")
def resume_command(
    ctx: typer.Context, webhook_id: WebhookIdArgument, tenant: TenantOption = None
) -> None:
    """Send to a paused webhook again, starting with the deliveries that waited."""
    _set_active(ctx, webhook_id, tenant, active=True)


def _set_active(ctx: typer.Context, webhook_id: str, tenant: str | None, *, active: bool) -> None:
    settings = Settings.of(ctx).in_tenant(tenant)
    done = "resumed" if active else "paused"
    if settings.server is not None:
        path = f"/webhooks/{segment(webhook_id)}"
        _remote(settings, lambda remote: remote.patch(path, {"active": active}))
        typer.echo(f"{done} webhook {webhook_id}")
        return

    async def change() -> Webhook | None:
        async with settings.corral(existing=True) as corral:
            await _as_admin(corral, settings, f"{done[:-1]} webhooks")
            now = corral.clock.now()
            return await corral.store.run_script(
                lambda d: set_webhook_active(
                    settings.tenant,
                    webhook_id,
                    active,
                    actor=settings.principal,
                    now=now,
                    dialect=d,
                )
            )

    if run_async(change) is None:
        typer.echo(f"no webhook {webhook_id!r} in tenant {settings.tenant!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"{done} webhook {webhook_id}")


@webhooks_app.command("remove", epilog="Example:\n\n  corral webhooks remove wh_3f1c9a7b2e4d6f80")
def remove_command(
    ctx: typer.Context, webhook_id: WebhookIdArgument, tenant: TenantOption = None
) -> None:
    """Remove a webhook of the tenant, with its deliveries."""
    settings = Settings.of(ctx).in_tenant(tenant)
    if settings.server is not None:
        _remote(settings, lambda remote: remote.delete(f"/webhooks/{segment(webhook_id)}"))
        typer.echo(f"removed webhook {webhook_id}")
        return

    async def remove() -> Webhook | None:
        async with settings.corral(existing=True) as corral:
            await _as_admin(corral, settings, "remove webhooks")
            now = corral.clock.now()
            return await corral.store.run_script(
                lambda d: delete_webhook(
                    settings.tenant, webhook_id, actor=settings.principal, now=now, dialect=d
                )
            )

    if run_async(remove) is None:
        typer.echo(f"no webhook {webhook_id!r} in tenant {settings.tenant!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"removed webhook {webhook_id}")


@webhooks_app.command(
    "deliveries",
    epilog="Example:\n\n  corral webhooks deliveries wh_3f1c9a7b2e4d6f80 --status dead",
)
def deliveries_command(
    ctx: typer.Context,
    webhook_id: WebhookIdArgument,
    status: Annotated[
        str | None,
        typer.Option("--status", help=f"Only these: {', '.join(DELIVERY_STATUSES)}."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="At most this many.")] = 20,
    tenant: TenantOption = None,
    json_output: JsonOption = False,
) -> None:
    """A webhook's latest deliveries, newest first, with their attempts."""
    if status is not None and status not in DELIVERY_STATUSES:
        raise typer.BadParameter(
            f"unknown status {status!r}; use {', '.join(DELIVERY_STATUSES)}", param_hint="--status"
        )
    settings = Settings.of(ctx).in_tenant(tenant)
    if settings.server is not None:
        path = f"/webhooks/{segment(webhook_id)}/deliveries"
        query = {"status": status}
        found = _remote(settings, lambda remote: remote.items(path, query, limit=limit))
        columns = ["event_id", "status", "attempts", "last_status", "last_error", "created_at"]
        _print_answers(found, json_output, "deliveries", columns)
        return
    wanted: DeliveryStatus | None = status

    async def fetch() -> list[Delivery] | None:
        async with settings.corral(existing=True) as corral:
            await _as_admin(corral, settings, "see webhook deliveries")
            found = await corral.store.read_script(
                lambda d: get_webhook(settings.tenant, webhook_id)
            )
            if found is None:
                return None
            return await corral.store.read_script(
                lambda d: list_deliveries(webhook_id, status=wanted, limit=limit)
            )

    found = run_async(fetch)
    if found is None:
        typer.echo(f"no webhook {webhook_id!r} in tenant {settings.tenant!r}", err=True)
        raise typer.Exit(2)
    if json_output:
        typer.echo(dumps({"deliveries": [delivery_json(delivery) for delivery in found]}))
        return
    if not found:
        typer.echo(f"no deliveries for webhook {webhook_id}", err=True)
        return
    table = Table(box=None)
    for column in ("event", "status", "attempts", "last answer", "queued", "next attempt"):
        table.add_column(column)
    for delivery in found:
        answer = delivery.last_error or (
            f"HTTP {delivery.last_status}" if delivery.last_status else "—"
        )
        table.add_row(
            Text(delivery.event_id),
            delivery.status,
            str(delivery.attempts),
            Text(shorten(answer)),
            when(delivery.created_at),
            when(delivery.next_attempt_at) if delivery.status == "pending" else "—",
        )
    console().print(table)


@webhooks_app.command("test", epilog="Example:\n\n  corral webhooks test wh_3f1c9a7b2e4d6f80")
def send_test_command(
    ctx: typer.Context, webhook_id: WebhookIdArgument, tenant: TenantOption = None
) -> None:
    """Queue a `webhook.test` event for the webhook; the server's dispatcher sends it."""
    settings = Settings.of(ctx).in_tenant(tenant)
    if settings.server is not None:
        path = f"/webhooks/{segment(webhook_id)}/test"
        sent = _remote(settings, lambda remote: remote.post(path))
        typer.echo(
            f"queued {sent['event_id']}; follow it with `corral webhooks deliveries {webhook_id}`"
        )
        return

    async def queue() -> Delivery | None:
        async with settings.corral(existing=True) as corral:
            await _as_admin(corral, settings, "test webhooks")
            webhook = await corral.store.read_script(
                lambda d: get_webhook(settings.tenant, webhook_id)
            )
            if webhook is None:
                return None
            now = corral.clock.now()
            return await corral.store.run_script(
                lambda d: enqueue_test(webhook, actor=settings.principal, now=now)
            )

    queued = run_async(queue)
    if queued is None:
        typer.echo(f"no webhook {webhook_id!r} in tenant {settings.tenant!r}", err=True)
        raise typer.Exit(2)
    typer.echo(
        f"queued {queued.event_id}; follow it with `corral webhooks deliveries {webhook_id}`"
    )


async def _as_admin(corral: Corral, settings: Settings, action: str) -> None:
    """Refuse (exit 2) unless the CLI's principal is an admin of its tenant."""
    await corral.store.read_script(
        lambda d: authorize(settings.tenant, settings.principal, "admin", action=action)
    )


def _remote(settings: Settings, call: Callable[[Remote], Any]) -> Any:
    """One call to the server (remote mode), with the CLI's error reporting."""
    with reporting_errors(), settings.remote() as remote:
        return call(remote)


def _print_answers(
    answers: list[dict[str, Any]], json_output: bool, what: str, columns: list[str]
) -> None:
    """Remote mode: the API's answers as `{what: [...]}` JSON, or a table of `columns`."""
    if json_output:
        typer.echo(dumps({what: answers}))
    elif answers:
        console().print(answer_table(answers, columns))
    else:
        typer.echo(f"no {what}", err=True)


def register(app: typer.Typer) -> None:
    app.add_typer(webhooks_app, name="webhooks")
