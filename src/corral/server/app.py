"""The control plane server: the REST API under `/api/v1`, its OpenAPI, and the web UI.

`create_app(config, workflows=...)` makes the ASGI app; `corral server` and `corral dev` serve
it with uvicorn through `app_from_environment` (the CLI cannot import this package: DESIGN.md
layers), which reads the same settings from `CORRAL_*` environment variables.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI

from corral import __version__
from corral.control.app_loading import load_workflows
from corral.control.dispatcher import run_dispatcher
from corral.engine import Workflow
from corral.engine.clock import Clock, SystemClock
from corral.observe.indexer import run_indexer
from corral.server import problems
from corral.server.config import ServerConfig
from corral.server.limits import BodyLimit
from corral.server.routes import (
    approvals,
    events,
    governance,
    health,
    keys,
    observe,
    policies,
    runs,
    webhooks,
    workflows,
)
from corral.server.routing import API_PREFIX
from corral.server.security import audit_changes
from corral.server.state import ServerState
from corral.server.ui import pages as ui
from corral.store import DEFAULT_DATABASE_URL, Store, open_store

API_ROUTERS: list[APIRouter] = [
    health.router,
    runs.router,
    observe.router,
    approvals.router,
    policies.router,
    governance.router,
    workflows.router,
    events.router,
    webhooks.router,
    keys.router,
]
"""Every router of the API, mounted under `API_PREFIX`."""

DESCRIPTION = """\
Corral's control plane: runs, approvals, policies, costs, search and the audit log of a tenant.

Authenticate with an API key (`corral keys create --tenant T --role R`) sent as
`Authorization: Bearer crl_…`. A key sees its own tenant only. Every operation names the role it
needs (`x-corral-role`): viewer < operator < approver < admin. Errors are RFC 9457 problem
details with a stable `code`; lists are paginated by `cursor`.
"""


def create_app(
    config: ServerConfig,
    *,
    workflows: Iterable[Workflow[Any, Any]] = (),
    store: Store | None = None,
    clock: Clock | None = None,
    extra_routers: Sequence[APIRouter] = (),
) -> FastAPI:
    """The server's ASGI app. With `store`, the caller opens and closes it; without, the app
    opens `config.database_url` when it starts and closes it when it stops."""
    owned = store is None
    the_store = store if store is not None else open_store(config.database_url)
    state = ServerState(config, the_store, clock or SystemClock(), workflows)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if owned:
            await the_store.open()
        stop = asyncio.Event()
        background: list[asyncio.Task[None]] = []
        if config.webhook_dispatcher:
            background.append(
                asyncio.create_task(run_dispatcher(the_store, state.clock, stop=stop, interval=1.0))
            )
        if config.indexer:
            background.append(asyncio.create_task(run_indexer(the_store, state.clock, stop=stop)))
        try:
            yield
        finally:
            stop.set()
            # A round in progress ends first: the store must not close under it.
            await asyncio.gather(*background)
            if owned:
                await the_store.close()

    app = FastAPI(
        title="Corral",
        version=__version__,
        description=DESCRIPTION,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        lifespan=lifespan,
    )
    app.state.corral = state
    problems.install(app)
    _publish_problem_schema(app)
    app.middleware("http")(audit_changes)
    app.add_middleware(BodyLimit, max_bytes=config.max_body_bytes)
    for router in [*API_ROUTERS, *extra_routers]:
        app.include_router(router, prefix=API_PREFIX)
    ui.mount(app)
    return app


def _publish_problem_schema(app: FastAPI) -> None:
    """Put `ProblemDetails` in the OpenAPI components: every route's error answers refer to it."""
    make_schema = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = make_schema()
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            components["ProblemDetails"] = problems.ProblemDetails.model_json_schema(
                ref_template="#/components/schemas/{model}"
            )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def app_from_environment() -> FastAPI:
    """The app `corral server` serves, configured by the environment: `CORRAL_DATABASE_URL`,
    `CORRAL_APP` (the workflows it may start runs of), `CORRAL_SERVER_SECRET`,
    `CORRAL_SERVER_MAX_BODY` (bytes) and `CORRAL_SERVER_SECURE_COOKIES` (`1`: the UI's session
    cookie is `Secure`, for a server behind an HTTPS proxy)."""
    config = ServerConfig(
        database_url=os.environ.get("CORRAL_DATABASE_URL", DEFAULT_DATABASE_URL),
        secure_cookies=os.environ.get("CORRAL_SERVER_SECURE_COOKIES", "") in ("1", "true", "yes"),
    )
    max_body = int(os.environ.get("CORRAL_SERVER_MAX_BODY", "0") or 0)
    if max_body > 0:
        config = dataclasses.replace(config, max_body_bytes=max_body)
    return create_app(config, workflows=load_workflows(os.environ.get("CORRAL_APP") or None))


__all__ = ["API_ROUTERS", "app_from_environment", "create_app"]
