"""`corral server` (the API and UI alone, for production) and `corral dev` (API, UI and a worker
on the embedded SQLite store, with a fresh admin key: everything on one laptop).

The CLI does not import `corral.server` (DESIGN.md layers): it hands uvicorn the import string of
the app factory and passes its settings as `CORRAL_*` environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import Annotated

import typer
import uvicorn

from corral.agents.replay import with_replay
from corral.cli.exits import reporting_errors
from corral.cli.keys import make_key
from corral.cli.session import Settings, run_async
from corral.control.app_loading import load_workflows
from corral.governance.identity import Principal, add_principal, list_principals
from corral.governance.keys import NewKey

APP_FACTORY = "corral.server.app:app_from_environment"
GRACE = 5
"""Seconds a stopping server waits for open requests: event streams (SSE) never end by
themselves, so without a limit one open browser tab would keep it from stopping."""

HostOption = Annotated[
    str, typer.Option("--host", help="The address to listen on (0.0.0.0: every interface).")
]
PortOption = Annotated[int, typer.Option("--port", "-p", min=1, max=65535, help="The port.")]


def _environment(settings: Settings) -> None:
    """What the app factory reads (`corral.server.app.app_from_environment`)."""
    os.environ["CORRAL_DATABASE_URL"] = settings.database_url
    if settings.app:
        os.environ["CORRAL_APP"] = settings.app
    else:
        os.environ.pop("CORRAL_APP", None)


def server_command(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    max_body: Annotated[
        int,
        typer.Option(
            "--max-body", metavar="BYTES", min=1024, help="The largest request body accepted."
        ),
    ] = 1 << 20,
) -> None:
    """Serve the REST API (/api/v1, OpenAPI at /api/v1/openapi.json) and the web UI.

    Workers run separately (`corral worker`), as many as you like, on the same database. Set
    CORRAL_SERVER_SECRET to the same value on every server process behind one load balancer
    (it signs page cursors and UI sessions). Make keys with `corral keys create`.
    """
    settings = Settings.of(ctx)
    with reporting_errors():
        load_workflows(settings.app)  # a broken --app is reported here, not by uvicorn
    _environment(settings)
    os.environ["CORRAL_SERVER_MAX_BODY"] = str(max_body)
    typer.echo(
        f"corral server on http://{host}:{port} ({settings.database_label}); "
        f"API docs at http://{host}:{port}/api/v1/docs",
        err=True,
    )
    uvicorn.run(
        APP_FACTORY,
        factory=True,
        host=host,
        port=port,
        log_level="warning",
        timeout_graceful_shutdown=GRACE,
    )


async def _dev_key(settings: Settings) -> NewKey:
    """A fresh admin key for `--as` (made the tenant's first admin if it has no principals)."""
    async with settings.corral() as corral:
        store, now = corral.store, corral.clock.now()
        known = await store.read_script(lambda d: list_principals(settings.tenant))
        if not known:
            admin = Principal(tenant=settings.tenant, name=settings.principal, roles=("admin",))
            await store.run_script(
                lambda d: add_principal(admin, actor=settings.principal, now=now, dialect=d)
            )
        return await make_key(
            store,
            tenant=settings.tenant,
            role="admin",
            principal=settings.principal,
            name="corral dev",
            actor=settings.principal,
            now=now,
            expires_at=now + 7 * 86400,
        )


def dev_command(
    ctx: typer.Context,
    host: HostOption = "127.0.0.1",
    port: PortOption = 8000,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Runs the worker executes at once.")
    ] = 8,
) -> None:
    """Start the API, the web UI and a worker on one database (the embedded SQLite file by
    default); print the URL and a fresh admin key (valid for 7 days). Stop with Ctrl-C."""
    settings = Settings.of(ctx)
    with reporting_errors():
        workflows = with_replay(load_workflows(settings.app))
    _environment(settings)
    made = run_async(lambda: _dev_key(settings))
    url = f"http://{host}:{port}"
    typer.echo(f"Corral is running at {url}  (API: {url}/api/v1/docs)")
    typer.echo(f"admin key for {settings.principal!r} in tenant {settings.tenant!r}:")
    typer.echo(made.token)
    typer.echo("sign in to the UI with it, or send it as 'Authorization: Bearer <key>'.", err=True)

    async def serve() -> None:
        server = uvicorn.Server(
            uvicorn.Config(
                APP_FACTORY,
                factory=True,
                host=host,
                port=port,
                log_level="warning",
                timeout_graceful_shutdown=GRACE,
            )
        )
        async with settings.corral(workflows) as corral:
            worker = corral.worker(concurrency=concurrency)
            working = asyncio.create_task(worker.run(grace=5.0))
            try:
                await server.serve()  # until Ctrl-C or SIGTERM (uvicorn handles both)
            finally:
                worker.stop()  # runs in flight are handed back at their next step
                with contextlib.suppress(asyncio.CancelledError):
                    await working

    with contextlib.suppress(KeyboardInterrupt):
        run_async(serve)


def register(app: typer.Typer) -> None:
    app.command(
        "server",
        epilog="Examples:\n\n  corral server --port 8000\n\n"
        "  corral --database-url postgresql://corral@db:5432/corral --app myproject.flows "
        "server --host 0.0.0.0",
    )(server_command)
    app.command(
        "dev",
        epilog="Example:\n\n  corral dev        # then open http://127.0.0.1:8000",
    )(dev_command)
