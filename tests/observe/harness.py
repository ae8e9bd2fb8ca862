"""What the observability tests share: approvers, and the inspection commands run in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from typer.testing import CliRunner, Result

from corral import Corral
from corral.cli.inspect_runs import register
from corral.cli.session import Settings
from corral.governance import identity
from corral.store.scripts import Dialect, Script
from corral.testing import FakeClock

T = TypeVar("T")

POLICY = """
name: refunds
rules:
  - name: large-refunds-need-approval
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    reason: Refunds over $500 are checked by finance.
    approval: {approvers: [finance], deadline: 1h}
"""


async def add_approver(corral: Corral, name: str, *groups: str) -> None:
    """Make `name` a principal of the tenant with the approver role, in `groups`."""
    principal = identity.Principal(
        tenant=corral.tenant, name=name, roles=("approver",), groups=tuple(groups)
    )

    def script(dialect: Dialect) -> Script[identity.Principal]:
        return (
            yield from identity.add_principal(
                principal, actor="human:test", now=0.0, dialect=dialect
            )
        )

    await corral.store.run_script(script)


def cli_app() -> typer.Typer:
    """A `corral`-like app with only the global options these commands read, and them."""
    app = typer.Typer()
    runs_app = typer.Typer()

    @app.callback()
    def root(
        ctx: typer.Context,
        database_url: Annotated[str, typer.Option("--database-url", envvar="CORRAL_DATABASE_URL")],
        app_ref: Annotated[str | None, typer.Option("--app", envvar="CORRAL_APP")] = None,
        tenant: Annotated[str, typer.Option("--tenant")] = "default",
        principal: Annotated[str, typer.Option("--as")] = "tester",
    ) -> None:
        ctx.obj = Settings(
            database_url=database_url, app=app_ref, tenant=tenant, principal=principal
        )

    app.add_typer(runs_app, name="runs")
    register(app, runs_app)
    return app


def invoke(runner: CliRunner, db_url: str, *args: str, app: str | None = None) -> Result:
    """Run one command in this process against `db_url` (CORRAL_REDACT=none: raw payloads)."""
    env = {"CORRAL_DATABASE_URL": db_url, "CORRAL_APP": app, "CORRAL_REDACT": "none"}
    result = runner.invoke(cli_app(), list(args), env=env)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def prepared(db_url: str, build: Callable[[Corral], Awaitable[T]]) -> T:
    """Run `build` on a `Corral` of `db_url` (its own event loop, as the CLI has its own)."""

    async def main() -> T:
        async with Corral(db_url, clock=FakeClock()) as corral:
            return await build(corral)

    return asyncio.run(main())
