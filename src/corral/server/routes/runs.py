"""Runs: start (with an idempotency key), list and filter, get, cancel, signal, journal."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, Response

from corral.engine import Corral
from corral.errors import RunNotFound
from corral.governance.run_control import cancel_governed, send_signal
from corral.server.pagination import DEFAULT_LIMIT, MAX_LIMIT
from corral.server.problems import not_found
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.shapes import Journal, Page, RunOut, SignalIn, SignalOut, StartRun, StepOut
from corral.server.state import ServerState, state_of
from corral.store import RUN_STATUSES, RunRecord
from corral.store.rows import RUN_COLUMNS, run_from_row
from corral.store.scripts import Script, Statement

router = APIRouter(tags=["runs"])

RunId = Annotated[str, Path(min_length=1, max_length=200, description="A run's id.")]
StatusFilter = Annotated[
    str | None,
    Query(pattern=f"^({'|'.join(RUN_STATUSES)})$", description="Only runs in this status."),
]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="At most this many items.")]
Cursor = Annotated[str | None, Query(max_length=2000, description="`next_cursor` of a page.")]


async def run_of(corral: Corral, caller: Caller, run_id: str) -> RunRecord:
    """The caller's tenant's run `run_id`: another tenant's run is "not found", like no run."""
    try:
        run = await corral.get_run(run_id)
    except RunNotFound:
        raise not_found("such run") from None
    if run.tenant != caller.tenant:
        raise not_found("such run")
    return run


@route(
    router,
    "POST",
    "/runs",
    "operator",
    status_code=201,
    response_model=RunOut,
    summary="Start a run",
    responses={200: {"model": RunOut, "description": "Started before with this key"}},
)
async def start_run(
    body: StartRun, caller: CallerDep, request: Request, response: Response
) -> RunOut:
    corral = state_of(request).corral(caller.tenant)
    if body.workflow not in corral.workflows.names():
        # Only the workflows the server was given: a `module:function` reference would make
        # the server import code a caller names.
        raise not_found(f"workflow {body.workflow!r}")
    handle = await corral.start(
        body.workflow,
        body.input,
        idempotency_key=body.idempotency_key,
        started_by=caller.principal,
    )
    run = await corral.get_run(handle.run_id)
    if not handle.created:
        response.status_code = 200
    response.headers["Location"] = f"{request.url.path}/{run.run_id}"
    return RunOut.of(run)


@route(router, "GET", "/runs", "viewer", response_model=Page[RunOut], summary="List runs")
async def list_runs(
    caller: CallerDep,
    request: Request,
    status: StatusFilter = None,
    workflow: Annotated[str | None, Query(max_length=200)] = None,
    top_level: Annotated[
        bool, Query(description="Only runs without a parent (the runs people started).")
    ] = False,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[RunOut]:
    """The tenant's runs, newest first."""
    return await runs_page(
        state_of(request),
        caller.tenant,
        status=status,
        workflow=workflow,
        top_level=top_level,
        limit=limit,
        cursor=cursor,
    )


async def runs_page(
    state: ServerState,
    tenant: str,
    *,
    status: str | None,
    workflow: str | None,
    top_level: bool,
    limit: int,
    cursor: str | None,
) -> Page[RunOut]:
    """One page of the tenant's runs (the API's list and the UI's); `Problem` 400 for a cursor
    of another list, or expired."""
    scope = f"runs|{tenant}|{status}|{workflow}|{top_level}"
    after = None
    if cursor is not None:
        position = state.cursors.read(cursor, scope=scope, now=state.now())
        after = (float(position["t"]), str(position["id"]))
    runs = await state.store.read_script(
        lambda d: runs_of(
            tenant,
            status=status,
            workflow=workflow,
            top_level=top_level,
            after=after,
            limit=limit + 1,
        )
    )
    next_cursor = None
    if len(runs) > limit:
        runs = runs[:limit]
        last = runs[-1]
        next_cursor = state.cursors.make(
            {"t": last.created_at, "id": last.run_id}, scope=scope, now=state.now()
        )
    return Page[RunOut](items=[RunOut.of(run) for run in runs], next_cursor=next_cursor)


def runs_of(
    tenant: str,
    *,
    status: str | None = None,
    workflow: str | None = None,
    top_level: bool = False,
    after: tuple[float, str] | None = None,
    limit: int,
) -> Script[list[RunRecord]]:
    """The tenant's runs, newest first (a read script); `after` is the `created_at` and
    `run_id` of the last run of the previous page."""
    where = ["tenant = ?"]
    params: list[Any] = [tenant]
    if top_level:
        where.append("parent_run_id IS NULL")
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if workflow is not None:
        where.append("workflow = ?")
        params.append(workflow)
    if after is not None:
        where.append("(created_at < ? OR (created_at = ? AND run_id < ?))")
        params += [after[0], after[0], after[1]]
    found = yield Statement(
        f"SELECT {RUN_COLUMNS} FROM runs WHERE {' AND '.join(where)}"
        " ORDER BY created_at DESC, run_id DESC LIMIT ?",
        (*params, limit),
    )
    return [run_from_row(row) for row in found.rows]


@route(router, "GET", "/runs/{run_id}", "viewer", response_model=RunOut, summary="Get a run")
async def get_run(run_id: RunId, caller: CallerDep, request: Request) -> RunOut:
    corral = state_of(request).corral(caller.tenant)
    return RunOut.of(await run_of(corral, caller, run_id))


@route(
    router,
    "POST",
    "/runs/{run_id}/cancel",
    "operator",
    response_model=RunOut,
    summary="Cancel a run",
)
async def cancel_run(run_id: RunId, caller: CallerDep, request: Request) -> RunOut:
    """Cancel a run that has not finished, and its unfinished children; their pending approvals
    are withdrawn. A run with compensations makes them first (its status is not yet
    `cancelled` in the answer). Cancelling a cancelled run answers it again; one that
    succeeded or failed is a conflict (409 `run_finished`)."""
    corral = state_of(request).corral(caller.tenant)
    await run_of(corral, caller, run_id)
    run, _ = await cancel_governed(corral, run_id, principal=caller.principal)
    return RunOut.of(run)


@route(
    router,
    "POST",
    "/runs/{run_id}/signals/{name}",
    "operator",
    status_code=201,
    response_model=SignalOut,
    summary="Send a signal to a run",
)
async def signal_run(
    run_id: RunId,
    name: Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:\-]+$")],
    body: SignalIn,
    caller: CallerDep,
    request: Request,
) -> SignalOut:
    """Deliver `data` to the run's `wait_for_signal(name)`; a run that has finished answers
    409 `run_finished`. Names starting `approval:` or `corral.` are Corral's own (422)."""
    corral = state_of(request).corral(caller.tenant)
    await run_of(corral, caller, run_id)
    return SignalOut.of(await send_signal(corral, run_id, name, body.data))


@route(
    router,
    "GET",
    "/runs/{run_id}/journal",
    "viewer",
    response_model=Journal,
    summary="A run's journal",
)
async def run_journal(run_id: RunId, caller: CallerDep, request: Request) -> Journal:
    """Every step of the run in order: intent, outcome, payloads (redacted)."""
    corral = state_of(request).corral(caller.tenant)
    await run_of(corral, caller, run_id)
    steps = await corral.store.load_journal(run_id)
    return Journal(run_id=run_id, steps=[StepOut.of(step) for step in steps])


__all__ = ["router", "run_of", "runs_of", "runs_page"]
