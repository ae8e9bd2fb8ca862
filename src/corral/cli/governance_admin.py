"""`corral principals …`, `corral pause …`, `corral resume …`: who may act, and kill switches."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from corral.cli.exits import reporting_errors
from corral.cli.remote import RemoteError, segment, timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps
from corral.errors import UsageError
from corral.governance import identity, pauses
from corral.governance.identity import ROLES, Principal, Role
from corral.store.scripts import Dialect, Script

principals_app = typer.Typer(
    name="principals",
    help="Humans and services of a tenant, with roles (viewer, operator, approver, admin) and "
    "approver groups.",
    no_args_is_help=True,
)
pause_app = typer.Typer(
    name="pause",
    help="Kill switches: stop every tool call of an agent, or of the whole tenant.",
    no_args_is_help=True,
)
resume_app = typer.Typer(
    name="resume", help="Clear a kill switch set with `corral pause`.", no_args_is_help=True
)

PRINCIPALS_EPILOG = """\
Examples:

  corral principals add ada --role admin

  corral --as ada principals add sam --role approver --group finance

  corral principals list --json

Roles are ordered: viewer < operator < approver < admin; each includes the ones before. Until a
tenant has a principal, anyone may add the first one (give it the admin role); after that only an
admin may (`--as` / CORRAL_PRINCIPAL says who you are).
"""

PAUSE_EPILOG = """\
Examples:

  corral pause agent refunds --reason "refund tool misbehaving"

  corral pause tenant --reason "incident 142"

  corral resume agent refunds --reason "fixed"

Once the command returns, no tool call of that agent (or tenant) starts, on any worker: a call
that would start fails its step and stops its run (status failed, error code `paused`). Needs the
operator role. Every pause and resume is in the audit log.
"""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reason = Annotated[str, typer.Option("--reason", help="Why (kept in the audit log).")]


def _now() -> float:
    import time

    return time.time()


@principals_app.command("add", epilog=PRINCIPALS_EPILOG)
def add_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The principal's name.")],
    role: Annotated[
        list[str],
        typer.Option("--role", help="A role: viewer, operator, approver or admin (repeatable)."),
    ],
    group: Annotated[
        list[str] | None,
        typer.Option("--group", help="An approver group it belongs to (repeatable)."),
    ] = None,
    kind: Annotated[str, typer.Option("--kind", help="human or service.")] = "human",
    json_output: JsonOption = False,
) -> None:
    """Add a principal (or replace its roles and groups)."""
    settings = Settings.of(ctx)
    with reporting_errors():
        unknown = [r for r in role if r not in ROLES]
        if unknown or kind not in ("human", "service"):
            raise UsageError(
                f"unknown role {unknown[0]!r}: roles are {', '.join(ROLES)}"
                if unknown
                else f"--kind must be human or service, not {kind!r}"
            )

    async def add() -> Principal:
        async with settings.corral() as corral:
            store = corral.store

            def script(dialect: Dialect) -> Script[Principal]:
                yield from identity.authorize(
                    settings.tenant, settings.principal, "admin", action="add principals"
                )
                return (
                    yield from identity.add_principal(
                        Principal(
                            tenant=settings.tenant,
                            name=name,
                            kind=kind,
                            roles=tuple(role),
                            groups=tuple(group or ()),
                        ),
                        actor=f"human:{settings.principal}",
                        now=_now(),
                        dialect=dialect,
                    )
                )

            return await store.run_script(script)

    saved = run_async(add)
    if json_output:
        typer.echo(dumps(saved.model_dump(mode="json")))
        return
    typer.echo(
        f"principal {saved.name} of tenant {saved.tenant}: roles {', '.join(saved.roles)}"
        + (f"; groups {', '.join(saved.groups)}" if saved.groups else "")
    )


@principals_app.command("list")
def list_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The tenant's principals, their roles and groups."""
    settings = Settings.of(ctx)

    async def read() -> list[Principal]:
        async with settings.corral(existing=True) as corral:
            return await corral.store.read_script(
                lambda d: identity.list_principals(settings.tenant)
            )

    found = run_async(read)
    if json_output:
        typer.echo(dumps({"principals": [p.model_dump(mode="json") for p in found]}))
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("principal", "kind", "roles", "groups"):
        table.add_column(column)
    for p in found:
        table.add_row(p.name, p.kind, ", ".join(p.roles), ", ".join(p.groups))
    Console().print(table)


@principals_app.command("remove")
def remove_command(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The principal to remove.")],
) -> None:
    """Remove a principal (admin only)."""
    settings = Settings.of(ctx)

    async def remove() -> bool:
        async with settings.corral(existing=True) as corral:

            def script(dialect: Dialect) -> Script[bool]:
                yield from identity.authorize(
                    settings.tenant, settings.principal, "admin", action="remove principals"
                )
                return (
                    yield from identity.remove_principal(
                        settings.tenant,
                        name,
                        actor=f"human:{settings.principal}",
                        now=_now(),
                        dialect=dialect,
                    )
                )

            return await corral.store.run_script(script)

    if not run_async(remove):
        typer.echo(f"no principal {name!r} in tenant {settings.tenant}", err=True)
        raise typer.Exit(2)
    typer.echo(f"removed principal {name}")


def _switch(ctx: typer.Context, target: str, reason: str, *, on: bool) -> None:
    settings = Settings.of(ctx)
    action = "pause" if on else "resume"
    role: Role = "operator"

    async def flip() -> object:
        async with settings.corral() as corral:

            def script(dialect: Dialect) -> Script[object]:
                yield from identity.authorize(
                    settings.tenant, settings.principal, role, action=f"{action} {target}"
                )
                if on:
                    return (
                        yield from pauses.pause(
                            settings.tenant,
                            target,
                            actor=f"human:{settings.principal}",
                            reason=reason,
                            now=_now(),
                            dialect=dialect,
                        )
                    )
                return (
                    yield from pauses.resume(
                        settings.tenant,
                        target,
                        actor=f"human:{settings.principal}",
                        reason=reason,
                        now=_now(),
                        dialect=dialect,
                    )
                )

            return await corral.store.run_script(script)

    if settings.server is not None:
        outcome: object = _switch_remote(settings, target, reason, on=on)
    else:
        outcome = run_async(flip)
    tenant = "the key's tenant" if settings.server else f"tenant {settings.tenant}"
    if on:
        typer.echo(f"paused {target} in {tenant}: no tool call of it starts now")
    elif outcome:
        typer.echo(f"resumed {target} in {tenant}")
    else:
        typer.echo(f"{target} was not paused", err=True)


def _switch_remote(settings: Settings, target: str, reason: str, *, on: bool) -> bool:
    """Set or clear a kill switch on the server; False: there was none to clear."""
    with reporting_errors(), settings.remote() as remote:
        if on:
            remote.post("/pauses", {"target": target, "reason": reason})
            return True
        try:
            remote.delete(f"/pauses/{segment(target)}", {"reason": reason})
        except RemoteError as error:
            if error.ids.get("status") != 404:
                raise
            return False
        return True


@pause_app.command("agent", epilog=PAUSE_EPILOG)
def pause_agent(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="AGENT", help="The agent's name.")],
    reason: Reason,
) -> None:
    """Stop every tool call of agent AGENT, on every worker, until `corral resume agent`."""
    _switch(ctx, pauses.agent_target(name), reason, on=True)


@pause_app.command("tenant", epilog=PAUSE_EPILOG)
def pause_tenant(ctx: typer.Context, reason: Reason) -> None:
    """Stop every tool call in the tenant, until `corral resume tenant`."""
    _switch(ctx, pauses.TENANT, reason, on=True)


@resume_app.command("agent")
def resume_agent(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="AGENT", help="The agent's name.")],
    reason: Reason = "resumed",
) -> None:
    """Let agent AGENT's tool calls start again."""
    _switch(ctx, pauses.agent_target(name), reason, on=False)


@resume_app.command("tenant")
def resume_tenant(ctx: typer.Context, reason: Reason = "resumed") -> None:
    """Let the tenant's tool calls start again."""
    _switch(ctx, pauses.TENANT, reason, on=False)


@pause_app.command("list")
def pauses_list(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The kill switches that are set."""
    settings = Settings.of(ctx)

    async def read() -> list[pauses.Pause]:
        async with settings.corral(existing=True) as corral:
            return await corral.store.read_script(lambda d: pauses.list_pauses(settings.tenant))

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            found = [_pause_of(answer) for answer in remote.get("/pauses")]
    else:
        found = run_async(read)
    if json_output:
        typer.echo(json.dumps({"pauses": [p.model_dump(mode="json") for p in found]}))
        return
    if not found:
        typer.echo("nothing is paused")
    for p in found:
        typer.echo(f"{p.target}: paused by {p.paused_by} ({p.reason})")


def _pause_of(answer: dict[str, Any]) -> pauses.Pause:
    """A pause of the API (remote mode) as `list_pauses` returns it."""
    return pauses.Pause.model_validate(
        {**answer, "tenant": "", "paused_at": timestamp(answer["paused_at"])}
    )


def register(app: typer.Typer) -> None:
    app.add_typer(principals_app, name="principals")
    app.add_typer(pause_app, name="pause")
    app.add_typer(resume_app, name="resume")
