"""The web UI's pages: the dashboard, runs, a run, the approvals inbox, policies, workflows.

Each page is a route declared like the API's (`route(...)`, role viewer), read with the same
functions the API uses, and shown only for the key's tenant. A browser without a session is
sent to the login page (`rendering.PageRoute`); changes are made by the pages' scripts through
the JSON API (`static/corral.js`), which checks the key's role again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import HTMLResponse

from corral.engine import Workflow
from corral.errors import PolicyNotFound, UsageError
from corral.governance.identity import Principal, get_principal
from corral.governance.policy_store import (
    StoredPolicy,
    diff_policies,
    get_policy,
    list_policies,
)
from corral.governance.redaction import Redactor
from corral.observe.search import SearchHit, search_runs
from corral.server.problems import Problem, not_found
from corral.server.routes import runs as run_lists
from corral.server.routes.approvals import approval_of, approvals_inbox
from corral.server.routes.runs import run_of
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.shapes import RunOut
from corral.server.state import ServerState, state_of
from corral.server.ui import session
from corral.server.ui.dashboard import load_dashboard
from corral.server.ui.rendering import PageRoute, render
from corral.server.ui.run_page import load_run_page
from corral.store import RUN_STATUSES

router = APIRouter(include_in_schema=False, route_class=PageRoute, tags=["ui"])

PAGE_SIZE = 25
RUN_SCOPES = {"top": "runs people started", "all": "with child runs"}
APPROVAL_STATUSES = ("pending", "approved", "rejected", "expired")
POLICY_VERSIONS_SHOWN = 30

Text = Annotated[str | None, Query(max_length=500)]
CursorParam = Annotated[str | None, Query(max_length=2000)]
HTML: dict[str, Any] = {"response_class": HTMLResponse, "response_model": None}


def _chosen(value: str | None) -> str | None:
    """A filter from a form: empty means none."""
    value = (value or "").strip()
    return value or None


@route(router, "GET", "/", "viewer", **HTML)
async def dashboard_page(caller: CallerDep, request: Request) -> HTMLResponse:
    state = state_of(request)
    dashboard = await load_dashboard(state.store, caller.tenant, now=state.now())
    return render(request, "dashboard.html", nav="dashboard", board=dashboard)


# -- runs ----------------------------------------------------------------------------------------


@route(router, "GET", "/runs", "viewer", **HTML)
async def runs_page(
    caller: CallerDep,
    request: Request,
    status: Text = None,
    workflow: Text = None,
    q: Text = None,
    scope: Text = None,
    cursor: CursorParam = None,
) -> HTMLResponse:
    """The tenant's runs, newest first: filtered by status and workflow, or found by words.
    Top-level runs only unless `scope=all` (or a workflow is chosen: agents run as children)."""
    state = state_of(request)
    wanted_status, wanted_workflow, words = _chosen(status), _chosen(workflow), _chosen(q)
    wanted_scope = _chosen(scope) or ("all" if wanted_workflow else "top")
    notice = ""
    if wanted_scope not in RUN_SCOPES:
        notice = f"There is no scope {wanted_scope!r}: showing every run."
        wanted_scope = "all"
    if wanted_status is not None and wanted_status not in RUN_STATUSES:
        notice = f"There is no status {wanted_status!r}: showing every status."
        wanted_status = None
    runs: list[RunOut] = []
    hits: list[SearchHit] = []
    next_cursor: str | None = None
    error = ""
    try:
        if words is not None:
            hits, next_cursor = await _search_page(
                state, caller, words, wanted_status, wanted_workflow, cursor
            )
        else:
            page = await run_lists.runs_page(
                state,
                caller.tenant,
                status=wanted_status,
                workflow=wanted_workflow,
                top_level=wanted_scope == "top",
                limit=PAGE_SIZE,
                cursor=cursor,
            )
            runs, next_cursor = page.items, page.next_cursor
    except Problem as problem:  # a stale or foreign cursor: start the list again
        if problem.status != 400:
            raise
        error = f"{problem.detail}."
    except UsageError as refused:  # a search with no word to look for
        error = refused.message
    return render(
        request,
        "runs.html",
        status_code=400 if error else 200,
        nav="runs",
        runs=runs,
        hits=hits,
        next_cursor=next_cursor,
        continued=cursor is not None,
        status=wanted_status,
        workflow=wanted_workflow,
        q=words,
        scope=wanted_scope,
        scopes=RUN_SCOPES,
        notice=notice,
        error=error,
        statuses=RUN_STATUSES,
        workflows=sorted({w.name for w in state.workflows} | {wanted_workflow or ""} - {""}),
    )


async def _search_page(
    state: ServerState,
    caller: Caller,
    words: str,
    status: str | None,
    workflow: str | None,
    cursor: str | None,
) -> tuple[list[SearchHit], str | None]:
    """One page of full-text hits. The cursor holds the creation time of the page's last run
    and the runs already shown at that time (search pages by time, newest first)."""
    scope = f"ui-search|{caller.tenant}|{status}|{workflow}|{words}"
    until: float | None = None
    seen: set[str] = set()
    if cursor is not None:
        position = state.cursors.read(cursor, scope=scope, now=state.now())
        until, seen = float(position["t"]), {str(i) for i in position.get("seen", [])}
    found = await search_runs(
        state.store,
        words,
        tenant=caller.tenant,
        status=status,
        until=until,
        limit=PAGE_SIZE + 1 + len(seen),
    )
    fresh = [hit for hit in found if hit.run_id not in seen][: PAGE_SIZE + 1]
    page, more = fresh[:PAGE_SIZE], len(fresh) > PAGE_SIZE
    next_cursor = None
    if more and page:
        last = page[-1].created_at
        at_last = {hit.run_id for hit in page if hit.created_at == last}
        if until is not None and last == until:
            at_last |= seen
        next_cursor = state.cursors.make(
            {"t": last, "seen": sorted(at_last)}, scope=scope, now=state.now()
        )
    # search has no workflow filter: a page may hold fewer runs than it scanned.
    shown = [hit for hit in page if workflow is None or hit.workflow == workflow]
    return shown, next_cursor


@route(router, "GET", "/runs/{run_id}", "viewer", **HTML)
async def run_page(
    run_id: Annotated[str, Path(min_length=1, max_length=200)],
    caller: CallerDep,
    request: Request,
) -> HTMLResponse:
    """A run: header, summary, trace tree and timeline, and every step; updated live."""
    state = state_of(request)
    await run_of(state.corral(caller.tenant), caller, run_id)
    page = await load_run_page(
        state.store, run_id, now=state.now(), redactor=Redactor.from_settings()
    )
    if page is None:
        raise not_found("such run")
    return render(
        request,
        "run.html",
        nav="runs",
        page=page,
        run=page.run,
        can_cancel=caller.key.has_role("operator"),
    )


# -- approvals -----------------------------------------------------------------------------------


@route(router, "GET", "/approvals", "viewer", **HTML)
async def approvals_page(
    caller: CallerDep,
    request: Request,
    status: Text = None,
    cursor: CursorParam = None,
) -> HTMLResponse:
    """The inbox: pending requests (or decided ones) with the exact call, and the decision
    form for those the key may decide."""
    state = state_of(request)
    wanted = _chosen(status) or "pending"
    if wanted not in APPROVAL_STATUSES:
        raise Problem(
            422,
            "invalid_request",
            f"there is no approval status {wanted!r}: choose {', '.join(APPROVAL_STATUSES)}",
        )
    error = ""
    requests: list[Any] = []
    next_cursor: str | None = None
    try:
        page = await approvals_inbox(caller, request, status=wanted, limit=PAGE_SIZE, cursor=cursor)
        requests, next_cursor = page.items, page.next_cursor
    except Problem as problem:
        if problem.status != 400:
            raise
        error = f"{problem.detail}."
    viewer = await _principal(state, caller)
    return render(
        request,
        "approvals.html",
        status_code=400 if error else 200,
        nav="approvals",
        requests=requests,
        status=wanted,
        statuses=APPROVAL_STATUSES,
        next_cursor=next_cursor,
        continued=cursor is not None,
        error=error,
        single=False,
        now=state.now(),
        **_decider(caller, viewer),
    )


@route(router, "GET", "/approvals/{approval_id}", "viewer", **HTML)
async def approval_page(
    approval_id: Annotated[str, Path(min_length=1, max_length=200)],
    caller: CallerDep,
    request: Request,
) -> HTMLResponse:
    """One request, pending or decided (the address a notification links to)."""
    state = state_of(request)
    found = await approval_of(state, caller, approval_id)
    viewer = await _principal(state, caller)
    return render(
        request,
        "approvals.html",
        nav="approvals",
        requests=[found],
        status=found.status,
        statuses=APPROVAL_STATUSES,
        next_cursor=None,
        continued=False,
        error="",
        single=True,
        now=state.now(),
        **_decider(caller, viewer),
    )


async def _principal(state: ServerState, caller: Caller) -> Principal | None:
    return await state.store.read_script(lambda d: get_principal(caller.tenant, caller.principal))


def _decider(caller: Caller, principal: Principal | None) -> dict[str, Any]:
    """What the inbox needs to know about the key: may it decide, and for which approvers."""
    return {
        "can_decide": caller.key.has_role("approver"),
        "principal": principal,
    }


# -- policies ------------------------------------------------------------------------------------


@route(router, "GET", "/policies", "viewer", **HTML)
async def policies_page(caller: CallerDep, request: Request) -> HTMLResponse:
    policies = await list_policies(state_of(request).store, caller.tenant)
    return render(request, "policies.html", nav="policies", policies=policies)


@route(router, "GET", "/policies/{name}", "viewer", **HTML)
async def policy_page(
    name: Annotated[str, Path(min_length=1, max_length=200)],
    caller: CallerDep,
    request: Request,
    a: Annotated[int | None, Query(ge=1)] = None,
    b: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """A policy's versions, one version's document, and the diff between two versions."""
    store = state_of(request).store
    try:
        latest = await get_policy(store, caller.tenant, name)
        shown = latest if b is None else await get_policy(store, caller.tenant, name, b)
        base_version = a if a is not None else (shown.version - 1 if shown.version > 1 else None)
        base = (
            None
            if base_version is None
            else await get_policy(store, caller.tenant, name, base_version)
        )
    except PolicyNotFound as missing:
        if missing.ids.get("version") is None:
            raise not_found(f"policy {name!r}") from None
        raise Problem(404, "not_found", missing.message) from None
    versions: list[StoredPolicy] = [latest]
    for number in range(latest.version - 1, max(latest.version - POLICY_VERSIONS_SHOWN, 0), -1):
        versions.append(await get_policy(store, caller.tenant, name, number))
    diff = (
        ""
        if base is None
        else diff_policies(
            base.document,
            shown.document,
            a_label=f"{name} v{base.version}",
            b_label=f"{name} v{shown.version}",
        )
    )
    return render(
        request,
        "policy.html",
        nav="policies",
        name=name,
        latest=latest,
        shown=shown,
        base=base,
        versions=versions,
        older=max(latest.version - POLICY_VERSIONS_SHOWN, 0),
        diff_lines=diff.splitlines(),
    )


# -- workflows -----------------------------------------------------------------------------------


def kind_of(workflow: Workflow[Any, Any]) -> str:
    """`agent`, `router`, `pipeline`… (the prefix of the name), or `workflow`."""
    prefix, separator, _ = workflow.name.partition(":")
    return prefix if separator else "workflow"


def type_name(type_: Any) -> str:
    if type_ is None or type_ is Any:
        return "any JSON"
    if isinstance(type_, type):
        return type_.__qualname__
    return repr(type_).replace("typing.", "")


@route(router, "GET", "/workflows", "viewer", **HTML)
async def workflows_page(caller: CallerDep, request: Request) -> HTMLResponse:
    """The agents and workflows this server can start runs of."""
    rows = [
        {
            "name": workflow.name,
            "version": workflow.version,
            "kind": kind_of(workflow),
            "input": type_name(workflow.input_type) if workflow.takes_input else "none",
            "output": type_name(workflow.output_type),
            "doc": (workflow.fn.__doc__ or "").strip().split("\n\n")[0],
        }
        for workflow in sorted(state_of(request).workflows, key=lambda w: (kind_of(w), w.name))
    ]
    return render(request, "workflows.html", nav="workflows", workflows=rows)


def mount(app: FastAPI) -> None:
    """Add the UI's pages, its login and its static files to `app`."""
    app.include_router(session.router)
    app.include_router(router)


__all__ = ["kind_of", "mount", "router"]
