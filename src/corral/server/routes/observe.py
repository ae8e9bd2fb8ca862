"""Reading runs after the fact: trace, summary, step diff, comparison, cost; cost reports; search.

Each is a view of the journal (`corral.observe`), as the CLI's `corral runs trace|summary|diff|
compare|cost`, `corral costs` and `corral runs search` show it, and each stays in the caller's
tenant: another tenant's run answers 404 like a missing one, and reports and searches are always
filtered by the key's tenant. The summary is the deterministic one (no model rewrites it here).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from corral.observe.compare import compare_runs
from corral.observe.costs import CostDimension, cost_report, run_cost, total_of
from corral.observe.diffs import step_diff, step_diff_json
from corral.observe.journal_view import RunView, load_run_view
from corral.observe.moments import parse_moment
from corral.observe.search import search_runs
from corral.observe.summaries import summarize, summary_json
from corral.observe.traces import load_trace
from corral.server.problems import Problem, not_found
from corral.server.routes.runs import RunId, run_of
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.shapes import moment
from corral.server.state import ServerState, state_of
from corral.server.views import (
    CostReportOut,
    CostRowOut,
    DivergenceOut,
    RunCostOut,
    SearchHitOut,
    SearchOut,
    SpanOut,
    StepDiffOut,
    SummaryOut,
    TotalsOut,
    TraceOut,
    redactor,
)
from corral.store import RUN_STATUSES

router = APIRouter(tags=["observe"])

Moment = Annotated[
    str | None,
    Query(
        max_length=64,
        description="A duration ago (`90s`, `30m`, `6h`, `7d`, `2w`) or an ISO 8601 date or time "
        "(`2026-11-20`, `2026-11-20T08:00:00Z`; UTC unless it says otherwise).",
    ),
]
Name = Annotated[str | None, Query(min_length=1, max_length=200)]


async def _view(state: ServerState, caller: Caller, run_id: str) -> RunView:
    """The caller's run with its decoded journal and its descendants."""
    await run_of(state.corral(caller.tenant), caller, run_id)
    view = await load_run_view(state.store, run_id, descendants=True)
    if view is None:  # deleted (retention) between the two reads
        raise not_found("such run")
    return view


def _window(
    state: ServerState, since: str | None, until: str | None
) -> tuple[float | None, float | None]:
    """`since` and `until` as times; 422 if one cannot be read or they are the wrong way."""
    now = state.now()
    start = None if since is None else parse_moment(since, option="since", now=now)
    end = None if until is None else parse_moment(until, option="until", now=now)
    if start is not None and end is not None and start > end:
        raise Problem(422, "invalid_request", f"since ({since}) is after until ({until})")
    return start, end


@route(
    router,
    "GET",
    "/runs/{run_id}/trace",
    "viewer",
    response_model=TraceOut,
    summary="A run's trace",
)
async def run_trace(run_id: RunId, caller: CallerDep, request: Request) -> TraceOut:
    """The run as a tree of spans: its steps, and its child runs under the steps that started
    them, each with its status, duration, tokens and cost, and the totals of its subtree (a
    child's calls count once). Spans are named by the OpenTelemetry GenAI conventions."""
    root = await load_trace(state_of(request).store, run_id)
    if root is None or root.tenant != caller.tenant:
        raise not_found("such run")
    return TraceOut(
        run_id=root.run_id,
        trace_id=root.trace_id,
        spans=sum(1 for _ in root.walk()),
        duration=root.duration,
        totals=TotalsOut.of(root.totals),
        root=SpanOut.of(root),
    )


@route(
    router,
    "GET",
    "/runs/{run_id}/summary",
    "viewer",
    response_model=SummaryOut,
    summary="A run in plain language",
)
async def run_summary(run_id: RunId, caller: CallerDep, request: Request) -> SummaryOut:
    """What was asked, who worked on it, what they decided and why, what the tools changed, who
    approved what, what it cost and how it ended: built from the journal and the approvals, the
    same way every time (child runs included)."""
    state = state_of(request)
    summary = await summarize(state.store, await _view(state, caller, run_id))
    return SummaryOut.model_validate(redactor().redact_json(summary_json(summary)))


@route(
    router,
    "GET",
    "/runs/{run_id}/steps/{seq}/diff",
    "viewer",
    response_model=StepDiffOut,
    summary="What a step changed",
)
async def step_change(
    run_id: RunId,
    seq: Annotated[int, Path(ge=1, le=1 << 31, description="The step's seq in the journal.")],
    caller: CallerDep,
    request: Request,
) -> StepDiffOut:
    """The messages step `seq` added to the agent's conversation (rebuilt from the journal) and
    its memory change (none is journaled yet: the note says why)."""
    view = await _view(state_of(request), caller, run_id)
    try:
        diff = step_diff(view, seq)
    except KeyError:
        raise not_found(f"step {seq} of this run (it has {len(view.steps)})") from None
    return StepDiffOut.model_validate(redactor().redact_json(step_diff_json(diff)))


@route(
    router,
    "GET",
    "/runs/{run_id}/compare/{other_run_id}",
    "viewer",
    response_model=DivergenceOut,
    summary="Compare two runs",
)
async def compare(
    run_id: RunId, other_run_id: RunId, caller: CallerDep, request: Request
) -> DivergenceOut:
    """Where two runs of the same workflow first differ (the step, its arguments or its result;
    a missing step; or the outcome), with both sides, followed into child runs; or that they
    are identical. Times, token usage and generated ids are not compared. Runs of different
    workflows: 422."""
    state = state_of(request)
    first = await _view(state, caller, run_id)
    second = await _view(state, caller, other_run_id)
    return DivergenceOut.of(compare_runs(first, second))


@route(
    router,
    "GET",
    "/runs/{run_id}/cost",
    "viewer",
    response_model=RunCostOut,
    summary="What a run cost",
)
async def cost_of_run(run_id: RunId, caller: CallerDep, request: Request) -> RunCostOut:
    """The run's own model calls and every descendant's (delegated agents, child workflows),
    each once, priced with genai-prices; split by run, agent and model."""
    state = state_of(request)
    await run_of(state.corral(caller.tenant), caller, run_id)
    cost = await run_cost(state.store, run_id)
    if cost is None:
        raise not_found("such run")
    return RunCostOut.of(cost)


@route(router, "GET", "/costs", "viewer", response_model=CostReportOut, summary="Cost report")
async def costs(
    caller: CallerDep,
    request: Request,
    by: Annotated[
        CostDimension,
        Query(
            description="Group calls by the agent, or the root run's workflow, tenant or user, "
            "or the model that answered."
        ),
    ] = "agent",
    since: Moment = None,
    until: Moment = None,
) -> CostReportOut:
    """What the tenant's model calls cost, grouped by `by`, most expensive first, with a total.
    Each call counts once; `since` and `until` select calls by when they finished. Only the
    caller's tenant is ever reported (`by=tenant` answers its one row)."""
    state = state_of(request)
    start, end = _window(state, since, until)
    rows = await cost_report(state.store, by=by, since=start, until=end, tenant=caller.tenant)
    # Every root run is under one workflow, tenant or user: only then do the rows' runs add up.
    runs_add_up = by in ("workflow", "tenant", "user")
    return CostReportOut(
        by=by,
        tenant=caller.tenant,
        since=moment(start),
        until=moment(end),
        rows=[CostRowOut.of(row) for row in rows],
        total=CostRowOut.of(total_of(rows, key="total"), runs=runs_add_up),
    )


@route(router, "GET", "/search", "viewer", response_model=SearchOut, summary="Search runs")
async def search(
    caller: CallerDep,
    request: Request,
    q: Annotated[
        str,
        Query(
            min_length=1,
            max_length=1000,
            description='Words (all must appear, stemmed), "a phrase", `a OR b`, `-excluded`.',
        ),
    ],
    agent: Name = None,
    tool: Name = None,
    status: Annotated[
        str | None,
        Query(pattern=f"^({'|'.join(RUN_STATUSES)})$", description="Only runs in this status."),
    ] = None,
    since: Moment = None,
    until: Moment = None,
    limit: Annotated[int, Query(ge=1, le=100, description="At most this many runs.")] = 20,
) -> SearchOut:
    """Full-text search of the tenant's runs: inputs and results, model answers, tool arguments
    and values, errors. The newest matching runs first (at most `limit`: narrow the query or the
    window to see older ones), each with the place that matched best. A query with no word that
    must appear is refused (422)."""
    state = state_of(request)
    start, end = _window(state, since, until)
    hits = await search_runs(
        state.store,
        q,
        tenant=caller.tenant,
        agent=agent,
        tool=tool,
        status=status,
        since=start,
        until=end,
        limit=limit,
    )
    return SearchOut(query=q, hits=[SearchHitOut.of(hit) for hit in hits])


__all__ = ["router"]
