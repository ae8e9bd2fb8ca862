"""Governance: the audit chain's verification, kill switches, circuit breakers, and metrics.

- `GET /audit/verify` checks the caller's tenant's hash chain (`corral audit verify`): a broken
  chain is a finding, not an error: 200 with `ok` false and the first bad entry.
- `/pauses` are the kill switches of `corral pause|resume`: once a pause is answered, no tool
  call of its target (an agent, or the whole tenant) starts on any worker. Each is audited.
- `GET /breakers` shows the circuit breakers workers publish. Breakers guard dependencies (a
  model, a tool server) shared by every tenant a worker serves, so every key sees every row;
  they name dependencies and workers, never a tenant's data.
- `GET /metrics` is the Prometheus exposition of the whole database (see the route).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import PlainTextResponse

from corral.governance import pauses
from corral.governance.verify import verify_chain
from corral.observe.metrics import render_prometheus
from corral.reliability.breaker_store import STALE_AFTER, list_breakers
from corral.server.problems import not_found
from corral.server.routes.policies import actor_of
from corral.server.routing import CallerDep, route
from corral.server.state import state_of
from corral.server.views import (
    PAUSE_TARGET,
    AuditVerification,
    BreakerOut,
    BreakersOut,
    PauseIn,
    PauseOut,
)
from corral.store.scripts import Dialect, Script

router = APIRouter(tags=["governance"])

PROMETHEUS_TEXT = "text/plain; version=0.0.4"
"""The media type of the Prometheus text exposition format."""


class PrometheusResponse(PlainTextResponse):
    media_type = PROMETHEUS_TEXT


@route(
    router,
    "GET",
    "/audit/verify",
    "admin",
    response_model=AuditVerification,
    summary="Verify the audit chain",
)
async def verify_audit(caller: CallerDep, request: Request) -> AuditVerification:
    """Verify the tenant's audit chain: every entry's hash and link to the one before, and the
    head. Tampering found is the answer, not an error: `ok` false and `first_bad` (the entry
    and what is wrong with it). Signed checkpoints are compared with the chain; their
    signatures are verified offline, with the public key (`corral audit verify --public-key`)."""
    report = await verify_chain(state_of(request).store, caller.tenant)
    return AuditVerification.of(report)


@route(router, "GET", "/pauses", "viewer", response_model=list[PauseOut], summary="Kill switches")
async def list_pauses(caller: CallerDep, request: Request) -> list[PauseOut]:
    """The tenant's kill switches that are set, oldest first."""
    found = await state_of(request).store.read_script(lambda d: pauses.list_pauses(caller.tenant))
    return [PauseOut.of(pause) for pause in found]


@route(
    router,
    "POST",
    "/pauses",
    "operator",
    status_code=201,
    response_model=PauseOut,
    summary="Pause an agent or the tenant",
    responses={200: {"model": PauseOut, "description": "It was paused already (kept as it was)"}},
)
async def pause(body: PauseIn, caller: CallerDep, request: Request, response: Response) -> PauseOut:
    """Set a kill switch: from this answer on, no tool call of the agent (`agent:<name>`) or of
    the whole tenant (`tenant`) starts, on any worker; a call that would start fails its step
    and stops its run (error `paused`). Audited (`pause.set`) with the reason. Pausing what is
    paused already keeps the first pause (200)."""
    state = state_of(request)
    now = state.now()
    actor = actor_of(caller)

    def script(dialect: Dialect) -> Script[tuple[pauses.Pause, bool]]:
        before = yield from pauses.list_pauses(caller.tenant)
        made = yield from pauses.pause(
            caller.tenant, body.target, actor=actor, reason=body.reason, now=now, dialect=dialect
        )
        return made, all(p.target != body.target for p in before)

    made, new = await state.store.run_script(script)
    if not new:
        response.status_code = 200
    return PauseOut.of(made)


@route(
    router,
    "DELETE",
    "/pauses/{target}",
    "operator",
    response_model=PauseOut,
    summary="Resume an agent or the tenant",
)
async def resume(
    target: Annotated[str, Path(pattern=PAUSE_TARGET, description="`tenant` or `agent:<name>`.")],
    caller: CallerDep,
    request: Request,
    reason: Annotated[
        str, Query(min_length=1, max_length=2000, description="Why (kept in the audit).")
    ] = "resumed",
) -> PauseOut:
    """Clear a kill switch: new tool calls of the target start again (runs it stopped stay
    stopped). Audited (`pause.cleared`). Answers the pause that was cleared; 404 if none was
    set."""
    state = state_of(request)
    now = state.now()
    actor = actor_of(caller)

    def script(dialect: Dialect) -> Script[pauses.Pause | None]:
        before = yield from pauses.list_pauses(caller.tenant)
        cleared = next((p for p in before if p.target == target), None)
        if cleared is None:
            return None
        yield from pauses.resume(
            caller.tenant, target, actor=actor, reason=reason, now=now, dialect=dialect
        )
        return cleared

    cleared = await state.store.run_script(script)
    if cleared is None:
        raise not_found(f"pause of {target}")
    return PauseOut.of(cleared)


@route(
    router,
    "GET",
    "/breakers",
    "viewer",
    response_model=BreakersOut,
    summary="Circuit breakers",
)
async def breakers(
    request: Request,
    include_stale: Annotated[
        bool, Query(description="Also rows a worker stopped publishing (it has likely stopped).")
    ] = False,
) -> BreakersOut:
    """Each worker's breaker for each dependency, by dependency: `open` fails calls at once
    until it tries again (`half_open`). Breakers belong to workers, which serve every tenant:
    this is the same list for every key. Rows not published for 15 minutes are stale."""
    state = state_of(request)
    now = state.now()
    rows = await state.store.read_script(lambda d: list_breakers())
    shown = [BreakerOut.of(row, stale=now - row.updated_at > STALE_AFTER) for row in rows]
    kept = shown if include_stale else [row for row in shown if not row.stale]
    return BreakersOut(breakers=kept, stale_hidden=len(shown) - len(kept))


@route(
    router,
    "GET",
    "/metrics",
    "admin",
    response_class=PrometheusResponse,
    summary="Prometheus metrics",
    responses={
        200: {
            "description": "The Prometheus text exposition format (version 0.0.4).",
            "content": {PROMETHEUS_TEXT: {"schema": {"type": "string"}}},
        }
    },
)
async def metrics(request: Request) -> PrometheusResponse:
    """Calls, failures, latency summaries, tokens and cost per agent, tool and model; runs by
    workflow and status; breaker states: for a Prometheus scraper (admin keys).

    It covers **every tenant of the database**, not only the key's: it is the server's health
    and load for its operators (the numbers carry no payloads). Give the scraper an admin key
    of a tenant kept for operations."""
    text = await render_prometheus(state_of(request).store)
    return PrometheusResponse(text)


__all__ = ["PROMETHEUS_TEXT", "router"]
