"""Policies of the caller's tenant: list, show, versions, diff; apply and roll back (admins);
test cases against them.

As `corral policy …` does (`corral.governance.policy_store`): a document is checked before
anything is written, and a bad one is a 422 problem naming the line (`code` `policy_invalid`,
`ids.line`); every change is a new version, audited with the key's principal as the actor. A
policy of another tenant is "not found", like one that does not exist.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from corral.errors import PolicyNotFound, UsageError
from corral.governance.documents import PolicyDocument
from corral.governance.policies import PolicySet, parse_policy
from corral.governance.policy_store import (
    StoredPolicy,
    apply_policy,
    diff_policies,
    get_policy,
    list_policies,
    list_versions,
    load_policy_set,
    rollback_policy,
)
from corral.governance.policy_tests import run_cases
from corral.server.problems import not_found
from corral.server.routing import CallerDep, route
from corral.server.security import Caller
from corral.server.state import ServerState, state_of
from corral.server.views import (
    AppliedOut,
    ApplyPolicy,
    CaseOut,
    PolicyDetailOut,
    PolicyDiffOut,
    PolicyOut,
    PolicyTestOut,
    PolicyTestRequest,
    PolicyVersionOut,
    RollbackPolicy,
)

router = APIRouter(tags=["policies"])

PolicyName = Annotated[
    str, Path(min_length=1, max_length=64, description="The policy's name (its `name:`).")
]
Version = Annotated[int | None, Query(ge=1, le=1 << 31)]


def actor_of(caller: Caller) -> str:
    """Who a change is recorded as: the key's principal (`human:ada`, or `key:<id>`)."""
    principal = caller.principal
    return principal if ":" in principal else f"human:{principal}"


async def _stored(
    state: ServerState, caller: Caller, name: str, version: int | None = None
) -> StoredPolicy:
    try:
        return await get_policy(state.store, caller.tenant, name, version)
    except PolicyNotFound:
        if version is None:
            raise not_found(f"policy {name!r}") from None
        raise not_found(f"version {version} of policy {name!r}") from None


@route(router, "GET", "/policies", "viewer", response_model=list[PolicyOut], summary="Policies")
async def policies(caller: CallerDep, request: Request) -> list[PolicyOut]:
    """The tenant's policies at their active (latest) versions, by name."""
    found = await list_policies(state_of(request).store, caller.tenant)
    return [PolicyOut.of(summary) for summary in found]


@route(
    router,
    "POST",
    "/policies",
    "admin",
    status_code=201,
    response_model=AppliedOut,
    summary="Apply a policy",
    responses={200: {"model": AppliedOut, "description": "The same text was already active"}},
)
async def apply(
    body: ApplyPolicy, caller: CallerDep, request: Request, response: Response
) -> AppliedOut:
    """Check a YAML policy document and make it the next (active) version of its name. An
    invalid document changes nothing: 422 `policy_invalid`, naming the line and what is wrong.
    The same text as the active version adds nothing (200, `changed` false)."""
    state = state_of(request)
    applied = await apply_policy(
        state.store,
        caller.tenant,
        body.document,
        source=body.source,
        actor=actor_of(caller),
        now=state.now(),
    )
    if not applied.changed:
        response.status_code = 200
    response.headers["Location"] = f"{request.url.path}/{applied.name}"
    return AppliedOut(name=applied.name, version=applied.version, changed=applied.changed)


@route(
    router,
    "POST",
    "/policies/test",
    "viewer",
    response_model=PolicyTestOut,
    summary="Test policies",
)
async def run_policy_tests(
    body: PolicyTestRequest, caller: CallerDep, request: Request
) -> PolicyTestOut:
    """Run test cases (given this call, expect this effect, rule, policy) against the tenant's
    active policies, or against the documents in `policies` (nothing is stored). Failing cases
    are in the answer (200); an invalid document is a 422 naming it (`policies[0]`) and line."""
    state = state_of(request)
    if body.policies is None:
        policy_set = await load_policy_set(state.store, caller.tenant)
    else:
        # Version 0: a document sent, not a stored version.
        policy_set = PolicySet(
            [
                (parse_policy(text, source=f"policies[{index}]"), 0)
                for index, text in enumerate(body.policies)
            ]
        )
    results = run_cases(policy_set, body.cases, tenant=caller.tenant, now=state.now())
    failed = sum(1 for result in results if not result.passed)
    return PolicyTestOut(
        passed=len(results) - failed,
        failed=failed,
        cases=[CaseOut.of(result) for result in results],
    )


@route(
    router,
    "GET",
    "/policies/{name}",
    "viewer",
    response_model=PolicyDetailOut,
    summary="Get a policy",
)
async def get(
    name: PolicyName,
    caller: CallerDep,
    request: Request,
    version: Annotated[
        Version, Query(description="This version (default: the active one).")
    ] = None,
) -> PolicyDetailOut:
    """A version of a policy (the active one by default): its YAML exactly as applied, who
    applied it when, and the document parsed (its rules and budgets)."""
    stored = await _stored(state_of(request), caller, name, version)
    parsed: PolicyDocument | None = None
    error: str | None = None
    try:
        parsed = parse_policy(stored.document, source=f"{name}@v{stored.version}")
    except UsageError as exc:  # stored by another Corral version: still shown
        error = exc.message
    return PolicyDetailOut.of(stored, parsed, error)


@route(
    router,
    "GET",
    "/policies/{name}/versions",
    "viewer",
    response_model=list[PolicyVersionOut],
    summary="A policy's versions",
)
async def versions(name: PolicyName, caller: CallerDep, request: Request) -> list[PolicyVersionOut]:
    """Every version of the policy, oldest first; the last is the active one. A rollback is a
    version of its own (`restored_from` names the version it copied)."""
    try:
        found = await list_versions(state_of(request).store, caller.tenant, name)
    except PolicyNotFound:
        raise not_found(f"policy {name!r}") from None
    latest = found[-1].version
    return [PolicyVersionOut.of(version, latest=latest) for version in found]


@route(
    router,
    "GET",
    "/policies/{name}/diff",
    "viewer",
    response_model=PolicyDiffOut,
    summary="Diff two versions of a policy",
)
async def diff(
    name: PolicyName,
    caller: CallerDep,
    request: Request,
    from_version: Annotated[
        Version, Query(alias="from", description="The older version (default: before `to`).")
    ] = None,
    to_version: Annotated[
        Version, Query(alias="to", description="The newer version (default: the active one).")
    ] = None,
) -> PolicyDiffOut:
    """A unified diff of two versions' texts (empty when they are the same)."""
    state = state_of(request)
    second = await _stored(state, caller, name, to_version)
    older = from_version if from_version is not None else max(second.version - 1, 1)
    first = await _stored(state, caller, name, older)
    text = diff_policies(
        first.document,
        second.document,
        a_label=f"{name}@v{first.version}",
        b_label=f"{name}@v{second.version}",
    )
    return PolicyDiffOut(
        name=name,
        from_version=first.version,
        to_version=second.version,
        same=not text,
        diff=text,
    )


@route(
    router,
    "POST",
    "/policies/{name}/rollback",
    "admin",
    response_model=AppliedOut,
    summary="Roll a policy back",
)
async def rollback(
    name: PolicyName, body: RollbackPolicy, caller: CallerDep, request: Request
) -> AppliedOut:
    """Make version `version`'s text active again, as a new version (history only grows;
    audited as `policy.rolled_back`). Already that text: nothing is added (`changed` false)."""
    state = state_of(request)
    await _stored(state, caller, name, body.version)
    try:
        applied = await rollback_policy(
            state.store,
            caller.tenant,
            name,
            body.version,
            actor=actor_of(caller),
            now=state.now(),
        )
    except PolicyNotFound:  # removed meanwhile
        raise not_found(f"policy {name!r}") from None
    return AppliedOut(
        name=applied.name,
        version=applied.version,
        changed=applied.changed,
        restored_from=body.version,
    )


__all__ = ["actor_of", "router"]
