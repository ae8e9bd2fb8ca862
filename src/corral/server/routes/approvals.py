"""Approvals: the tenant's inbox (list, get) and decisions (approve, with edits, or reject)."""

from __future__ import annotations

from typing import Annotated, cast

from fastapi import APIRouter, Path, Query, Request

from corral.errors import ApprovalNotFound
from corral.governance.approvals import (
    ApprovalDecision,
    ApprovalRequest,
    ApprovalStatus,
    decide,
    get_approval,
    list_approvals,
)
from corral.server.pagination import DEFAULT_LIMIT, MAX_LIMIT
from corral.server.problems import not_found
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.shapes import Decision, Page
from corral.server.state import ServerState, state_of

router = APIRouter(tags=["approvals"])

ApprovalId = Annotated[str, Path(min_length=1, max_length=200)]


async def approval_of(state: ServerState, caller: Caller, approval_id: str) -> ApprovalRequest:
    found = await state.store.read_script(lambda d: get_approval(approval_id))
    if found is None or found.tenant != caller.tenant:
        raise not_found("such approval")
    return found


@route(
    router,
    "GET",
    "/approvals",
    "viewer",
    response_model=Page[ApprovalRequest],
    summary="List approval requests",
)
async def approvals_inbox(
    caller: CallerDep,
    request: Request,
    status: Annotated[
        str | None,
        Query(pattern="^(pending|approved|rejected|expired)$"),
    ] = "pending",
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
    cursor: Annotated[str | None, Query(max_length=2000)] = None,
) -> Page[ApprovalRequest]:
    """The tenant's requests, newest first; pending ones unless `status` says otherwise."""
    state = state_of(request)
    scope = f"approvals|{caller.tenant}|{status}"
    after = None
    if cursor is not None:
        position = state.cursors.read(cursor, scope=scope, now=state.now())
        after = (float(position["t"]), str(position["id"]))
    wanted = cast(ApprovalStatus | None, status)
    found = await state.store.read_script(
        lambda d: list_approvals(caller.tenant, wanted, limit + 1, after=after)
    )
    next_cursor = None
    if len(found) > limit:
        found = found[:limit]
        last = found[-1]
        next_cursor = state.cursors.make(
            {"t": last.created_at, "id": last.approval_id}, scope=scope, now=state.now()
        )
    return Page[ApprovalRequest](items=found, next_cursor=next_cursor)


@route(
    router,
    "GET",
    "/approvals/{approval_id}",
    "viewer",
    response_model=ApprovalRequest,
    summary="Get an approval request",
)
async def get_approval_request(
    approval_id: ApprovalId, caller: CallerDep, request: Request
) -> ApprovalRequest:
    """The exact tool call and its arguments, the policy and rule that asked for approval and
    why, who may decide, the deadline; and the decision, once made."""
    return await approval_of(state_of(request), caller, approval_id)


@route(
    router,
    "POST",
    "/approvals/{approval_id}/decision",
    "approver",
    response_model=ApprovalDecision,
    summary="Decide an approval request",
)
async def decide_approval(
    approval_id: ApprovalId, body: Decision, caller: CallerDep, request: Request
) -> ApprovalDecision:
    """Approve (optionally with edited `arguments`, checked against the tool's schema) or
    reject, with a reason, as the key's principal, who must be one of the request's approvers.
    Decided already: 409 `already_decided`."""
    state = state_of(request)
    await approval_of(state, caller, approval_id)
    try:
        return await decide(
            state.corral(caller.tenant),
            approval_id,
            approve=body.approve,
            principal=caller.principal,
            reason=body.reason,
            edited_arguments=body.arguments,
        )
    except ApprovalNotFound:
        raise not_found("such approval") from None
