"""The authorization matrix: every API route × every role × own tenant / other tenant / missing.

The routes are enumerated from the app's router, and `EXPECTED` declares the role each needs: a
route added without a row here, or a row whose route is gone, fails the test; so does a route
whose declared role (`x-corral-role`) differs from the row. Then every route is called over HTTP:

- without a key: 401;
- with a key below the route's role: 403 `forbidden`, whatever the object;
- with a key at or above it: the caller's own tenant's object is served (anything but 401, 403
  and 404: a conflict such as "already decided" is a served answer), another tenant's object
  and one that does not exist both answer 404, with the same problem.

Every key acts as a principal holding exactly the key's role (and the approvers' group), so that
the governance checks behind the routes agree with the keys.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from corral.governance.approvals import request_approval
from corral.governance.documents import ApprovalSpec
from corral.governance.identity import ROLES, Role
from corral.governance.keys import parse_token
from corral.server import ServerConfig, create_app
from corral.server.security import PUBLIC, route_role

from .harness import ApiServer

pytestmark = pytest.mark.timeout(180)

API = "/api/v1"

DOCS = (f"{API}/openapi.json", f"{API}/docs")

EXPECTED: dict[tuple[str, str], str] = {
    ("GET", "/openapi.json"): PUBLIC,
    ("GET", "/docs"): PUBLIC,
    ("GET", "/health"): PUBLIC,
    # runs
    ("POST", "/runs"): "operator",
    ("GET", "/runs"): "viewer",
    ("GET", "/runs/{run_id}"): "viewer",
    ("POST", "/runs/{run_id}/cancel"): "operator",
    ("POST", "/runs/{run_id}/signals/{name}"): "operator",
    ("GET", "/runs/{run_id}/journal"): "viewer",
    # approvals
    ("GET", "/approvals"): "viewer",
    ("GET", "/approvals/{approval_id}"): "viewer",
    ("POST", "/approvals/{approval_id}/decision"): "approver",
    # keys
    ("POST", "/keys"): "admin",
    ("GET", "/keys"): "admin",
    ("DELETE", "/keys/{key_id}"): "admin",
}
"""(method, path under /api/v1) → the role it needs."""

BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/runs"): {"workflow": "greet", "input": "matrix"},
    ("POST", "/runs/{run_id}/signals/{name}"): {"data": 1},
    ("POST", "/approvals/{approval_id}/decision"): {"approve": True, "reason": "matrix"},
    ("POST", "/keys"): {"role": "viewer", "name": "made by the matrix"},
}
"""A valid body for each route that takes one (others get none)."""

GROUP = "finance"


@dataclass
class Tenant:
    """One tenant's objects, which path parameters name."""

    name: str
    run_id: str
    approval_id: str
    key_id: str


def declared() -> dict[tuple[str, str], str | None]:
    """(method, path under /api/v1) → the role the route declares, for every route of the app
    (the API's, and the OpenAPI document and its docs page, which are public)."""
    app = create_app(ServerConfig(database_url="sqlite:///unused.db", secret=b"x" * 32))
    found: dict[tuple[str, str], str | None] = {}
    for context in iter_route_contexts(app.routes):
        if not context.path.startswith(API):
            continue
        original = context.original_route
        role = route_role(original) if isinstance(original, APIRoute) else None
        if not isinstance(original, APIRoute) and context.path in DOCS:
            role = PUBLIC
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found[(method, context.path.removeprefix(API))] = role
    return found


def test_every_route_is_in_the_table_with_the_role_it_declares() -> None:
    found = declared()
    assert sorted(set(found) - set(EXPECTED)) == [], "routes missing from EXPECTED"
    assert sorted(set(EXPECTED) - set(found)) == [], "rows of EXPECTED without a route"
    assert {route: found[route] for route in EXPECTED} == EXPECTED


async def make_tenant(api: ApiServer, name: str) -> Tenant:
    corral = api.corral(name)
    handle = await corral.start("wait_for_go", f"order of {name}")
    await api.corral().run_until_idle()
    approval = await api.store.run_script(
        lambda d: request_approval(
            tenant=name,
            run_id=handle.run_id,
            step_seq=1,
            agent="matrix",
            tool="refund",
            arguments={"amount": 5},
            parameters={"type": "object"},
            reason="the matrix asks",
            policy=None,
            policy_version=None,
            rule=None,
            spec=ApprovalSpec(approvers=(GROUP,)),
            now=api.clock.now(),
            dialect=d,
        )
    )
    spare = await api.key("viewer", tenant=name)
    parsed = parse_token(spare)
    assert parsed is not None
    return Tenant(name, handle.run_id, approval.approval_id, parsed[0])


PathParams = Callable[[Tenant | None], dict[str, str]]


def parameters(path: str) -> PathParams:
    """How to fill `path`'s parameters for a tenant's objects (None: objects that do not
    exist)."""

    def fill(tenant: Tenant | None) -> dict[str, str]:
        missing = "does-not-exist"
        values = {
            "run_id": tenant.run_id if tenant else missing,
            "approval_id": tenant.approval_id if tenant else missing,
            "key_id": tenant.key_id if tenant else "zzzzzzzzzzzz",
            "name": "go",
        }
        return {key: value for key, value in values.items() if "{" + key + "}" in path}

    return fill


def has_object(path: str) -> bool:
    return "{" in path


async def test_the_matrix(api: ApiServer) -> None:
    tokens: dict[Role, str] = {}
    for role in ROLES:
        await api.principal(f"{role}-person", roles=(role,), groups=(GROUP,))
        await api.principal(f"{role}-person", roles=(role,), groups=(GROUP,), tenant="acme")
        tokens[role] = await api.key(role, principal=f"{role}-person")
    own = await make_tenant(api, "default")
    other = await make_tenant(api, "acme")

    mismatches: list[str] = []
    async with api.client() as anonymous:
        for (method, path), needed in sorted(EXPECTED.items()):
            if needed == PUBLIC:
                continue
            body = BODIES.get((method, path))
            fill = parameters(path)
            url = API + path.format(**fill(own))
            answer = await anonymous.request(method, url, json=body)
            if answer.status_code != 401:
                mismatches.append(f"{method} {path} without a key: {answer.status_code}")
            for role in ROLES:
                allowed = ROLES.index(role) >= ROLES.index(needed)  # type: ignore[arg-type]
                targets: list[tuple[str, Tenant | None]] = [("own", own)]
                if has_object(path):
                    targets += [("other tenant's", other), ("missing", None)]
                async with api.client(tokens[role]) as http:
                    for label, target in targets:
                        url = API + path.format(**fill(target))
                        answer = await http.request(method, url, json=body)
                        status = answer.status_code
                        where = f"{method} {path} as {role} on the {label} object: {status}"
                        if not allowed:
                            if status != 403 or answer.json().get("code") != "forbidden":
                                mismatches.append(f"{where} (wanted 403 forbidden)")
                        elif target is own:
                            if status in (401, 403, 404) or status >= 500:
                                mismatches.append(f"{where} (wanted it served): {answer.text}")
                        elif status != 404:
                            mismatches.append(f"{where} (wanted 404)")
    assert mismatches == []
