"""`corral keys`: API keys of the control plane server (create, list, revoke)."""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from rich.table import Table

from corral.cli.display import console, when
from corral.cli.exits import reporting_errors
from corral.cli.remote import segment, timestamp
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.governance.identity import ROLES, Role, authorize
from corral.governance.keys import ApiKey, NewKey, create_key, list_keys, revoke_key
from corral.store import Store

keys_app = typer.Typer(
    help="API keys for the server (`corral server`, `corral dev`): each bound to a tenant and a "
    "role, acting as a principal. The key is printed once, when it is made.",
    no_args_is_help=True,
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
TenantOption = Annotated[
    str | None,
    typer.Option("--tenant", "-t", help="The key's tenant (default: the root --tenant)."),
]


def _check_role(value: str) -> str:
    if value not in ROLES:
        raise typer.BadParameter(f"unknown role {value!r}; use one of {', '.join(ROLES)}")
    return value


def key_of(answer: dict[str, Any]) -> ApiKey:
    """A key of the API (remote mode) as the store returns it."""
    return ApiKey(
        key_id=answer["key_id"],
        tenant=answer["tenant"],
        role=answer["role"],
        principal=answer["principal"],
        name=answer["name"],
        created_at=timestamp(answer["created_at"]) or 0.0,
        created_by=answer["created_by"],
        expires_at=timestamp(answer.get("expires_at")),
        last_used_at=timestamp(answer.get("last_used_at")),
        revoked_at=timestamp(answer.get("revoked_at")),
    )


def key_json(key: ApiKey) -> dict[str, object]:
    return {
        "key_id": key.key_id,
        "tenant": key.tenant,
        "role": key.role,
        "principal": key.principal,
        "name": key.name,
        "created_at": iso(key.created_at),
        "created_by": key.created_by,
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "revoked_at": iso(key.revoked_at),
    }


async def make_key(
    store: Store,
    *,
    tenant: str,
    role: Role,
    principal: str | None,
    name: str,
    actor: str,
    now: float,
    expires_at: float | None,
) -> NewKey:
    """Make a key as `actor`, who needs the admin role once the tenant has principals."""
    await store.read_script(lambda d: authorize(tenant, actor, "admin", action="make API keys"))
    return await store.run_script(
        lambda d: create_key(
            tenant=tenant,
            role=role,
            principal=principal,
            name=name,
            actor=actor,
            now=now,
            expires_at=expires_at,
            dialect=d,
        )
    )


@keys_app.command(
    "create",
    epilog="Examples:\n\n"
    "  corral keys create --tenant acme --role viewer --name grafana\n\n"
    "  corral --as ada keys create --tenant acme --role approver --principal finn"
    " --name 'finn (laptop)' --expires-in-days 90",
)
def create_command(
    ctx: typer.Context,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            "-r",
            callback=_check_role,
            help=f"What the key may do: {', '.join(ROLES)} (each includes the ones before).",
        ),
    ],
    name: Annotated[str, typer.Option("--name", help="What the key is for.")] = "api key",
    principal: Annotated[
        str | None,
        typer.Option(
            "--principal",
            help="Whom the key acts as (a principal of the tenant: deciding approvals needs one "
            "that is an approver). Default: the key itself (`key:<id>`).",
        ),
    ] = None,
    expires_in_days: Annotated[
        float | None,
        typer.Option("--expires-in-days", min=0.001, help="Refuse the key after this long."),
    ] = None,
    tenant: TenantOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make an API key for the tenant of `--tenant`; print it once."""
    settings = Settings.of(ctx).in_tenant(tenant)

    async def make() -> NewKey:
        async with settings.corral() as corral:
            now = corral.clock.now()
            return await make_key(
                corral.store,
                tenant=settings.tenant,
                role=cast(Role, role),
                principal=principal,
                name=name,
                actor=settings.principal,
                now=now,
                expires_at=None if expires_in_days is None else now + expires_in_days * 86400,
            )

    if settings.server is not None:
        body: dict[str, Any] = {"role": role, "name": name, "principal": principal}
        body["expires_in_days"] = expires_in_days
        with reporting_errors(), settings.remote() as remote:
            answer = remote.post("/keys", body)
        made = NewKey(key_of(answer), answer["token"])
    else:
        made = run_async(make)
    if json_output:
        typer.echo(dumps({**key_json(made.key), "token": made.token}))
        return
    typer.echo(made.token)
    typer.echo(
        f"key {made.key.key_id}: {made.key.role} of tenant {made.key.tenant!r}, acting as "
        f"{made.key.principal!r}. It is shown this once; send it as "
        "'Authorization: Bearer <key>'.",
        err=True,
    )


@keys_app.command("list", epilog="Example:\n\n  corral keys list --tenant acme")
def list_command(
    ctx: typer.Context, tenant: TenantOption = None, json_output: JsonOption = False
) -> None:
    """List the tenant's keys (never their secrets)."""
    settings = Settings.of(ctx).in_tenant(tenant)

    async def fetch() -> list[ApiKey]:
        async with settings.corral(existing=True) as corral:
            await corral.store.read_script(
                lambda d: authorize(
                    settings.tenant, settings.principal, "admin", action="list keys"
                )
            )
            return await corral.store.read_script(lambda d: list_keys(settings.tenant))

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            found = [key_of(answer) for answer in remote.get("/keys")]
    else:
        found = run_async(fetch)
    if json_output:
        typer.echo(dumps({"keys": [key_json(key) for key in found]}))
        return
    if not found:
        typer.echo(f"no keys in tenant {settings.tenant!r}", err=True)
        return
    table = Table(box=None)
    for column in ("key", "role", "acts as", "name", "created", "last used", "state"):
        table.add_column(column)
    for key in found:
        state = "revoked" if key.revoked_at is not None else "active"
        table.add_row(
            key.key_id,
            key.role,
            key.principal,
            key.name,
            when(key.created_at),
            when(key.last_used_at) if key.last_used_at else "never",
            state,
        )
    console().print(table)


@keys_app.command("revoke", epilog="Example:\n\n  corral keys revoke 7kq2m9xw4hrt")
def revoke_command(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (from `corral keys list`).")],
    tenant: TenantOption = None,
) -> None:
    """Revoke a key of the tenant: the server refuses it from now on."""
    settings = Settings.of(ctx).in_tenant(tenant)

    async def revoke() -> ApiKey | None:
        async with settings.corral(existing=True) as corral:
            await corral.store.read_script(
                lambda d: authorize(
                    settings.tenant, settings.principal, "admin", action="revoke keys"
                )
            )
            now = corral.clock.now()
            return await corral.store.run_script(
                lambda d: revoke_key(
                    settings.tenant, key_id, actor=settings.principal, now=now, dialect=d
                )
            )

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            revoked: ApiKey | None = key_of(remote.delete(f"/keys/{segment(key_id)}"))
    else:
        revoked = run_async(revoke)
    if revoked is None:
        typer.echo(f"no key {key_id!r} in tenant {settings.tenant!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"revoked key {key_id}")


def register(app: typer.Typer) -> None:
    app.add_typer(keys_app, name="keys")
