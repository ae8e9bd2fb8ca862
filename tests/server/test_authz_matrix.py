"""The authorization matrix: every route × every role × own tenant / other tenant / missing.

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

from dataclasses import dataclass
from typing import Any, cast

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from corral.control.webhooks import create_webhook
from corral.governance.approvals import request_approval
from corral.governance.documents import ApprovalSpec
from corral.governance.identity import ROLES, Role
from corral.governance.keys import parse_token
from corral.governance.pauses import pause
from corral.governance.policy_store import apply_policy
from corral.server import ServerConfig, create_app
from corral.server.security import PUBLIC, route_role

from .harness import ApiServer

pytestmark = pytest.mark.timeout(180)

API = "/api/v1"

EXPECTED: dict[tuple[str, str], str] = {
    # the OpenAPI document, its browsable page, the health check
    ("GET", f"{API}/openapi.json"): PUBLIC,
    ("GET", f"{API}/docs"): PUBLIC,
    ("GET", f"{API}/health"): PUBLIC,
    # runs
    ("POST", f"{API}/runs"): "operator",
    ("GET", f"{API}/runs"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}"): "viewer",
    ("POST", f"{API}/runs/{{run_id}}/cancel"): "operator",
    ("POST", f"{API}/runs/{{run_id}}/signals/{{name}}"): "operator",
    ("GET", f"{API}/runs/{{run_id}}/journal"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}/trace"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}/summary"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}/steps/{{seq}}/diff"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}/compare/{{other_run_id}}"): "viewer",
    ("GET", f"{API}/runs/{{run_id}}/cost"): "viewer",
    ("GET", f"{API}/costs"): "viewer",
    ("GET", f"{API}/search"): "viewer",
    # approvals
    ("GET", f"{API}/approvals"): "viewer",
    ("GET", f"{API}/approvals/{{approval_id}}"): "viewer",
    ("POST", f"{API}/approvals/{{approval_id}}/decision"): "approver",
    # policies
    ("GET", f"{API}/policies"): "viewer",
    ("POST", f"{API}/policies"): "admin",
    ("POST", f"{API}/policies/test"): "viewer",
    ("GET", f"{API}/policies/{{name}}"): "viewer",
    ("GET", f"{API}/policies/{{name}}/versions"): "viewer",
    ("GET", f"{API}/policies/{{name}}/diff"): "viewer",
    ("POST", f"{API}/policies/{{name}}/rollback"): "admin",
    # governance and operations
    ("GET", f"{API}/audit/verify"): "admin",
    ("GET", f"{API}/pauses"): "viewer",
    ("POST", f"{API}/pauses"): "operator",
    ("DELETE", f"{API}/pauses/{{target}}"): "operator",
    ("GET", f"{API}/breakers"): "viewer",
    ("GET", f"{API}/metrics"): "admin",
    ("GET", f"{API}/workflows"): "viewer",
    ("GET", f"{API}/workflows/{{name}}"): "viewer",
    # events out
    ("GET", f"{API}/events"): "viewer",
    ("POST", f"{API}/webhooks"): "admin",
    ("GET", f"{API}/webhooks"): "admin",
    ("GET", f"{API}/webhooks/{{webhook_id}}"): "admin",
    ("DELETE", f"{API}/webhooks/{{webhook_id}}"): "admin",
    ("PATCH", f"{API}/webhooks/{{webhook_id}}"): "admin",
    ("GET", f"{API}/webhooks/{{webhook_id}}/deliveries"): "admin",
    ("POST", f"{API}/webhooks/{{webhook_id}}/test"): "admin",
    # keys
    ("POST", f"{API}/keys"): "admin",
    ("GET", f"{API}/keys"): "admin",
    ("DELETE", f"{API}/keys/{{key_id}}"): "admin",
    # the web UI: signing in and out, its files, its pages
    ("GET", "/login"): PUBLIC,
    ("POST", "/login"): PUBLIC,
    ("POST", "/logout"): PUBLIC,
    ("GET", "/ui/static/{name}"): PUBLIC,
    ("GET", "/"): "viewer",
    ("GET", "/runs"): "viewer",
    ("GET", "/runs/{run_id}"): "viewer",
    ("GET", "/approvals"): "viewer",
    ("GET", "/approvals/{approval_id}"): "viewer",
    ("GET", "/policies"): "viewer",
    ("GET", "/policies/{name}"): "viewer",
    ("GET", "/workflows"): "viewer",
}
"""(method, path) → the role it needs, for every route of the app."""

DOCS = (f"{API}/openapi.json", f"{API}/docs")
SHARED = frozenset({f"{API}/workflows/{{name}}"})
"""Routes whose object is the server's, not a tenant's: another tenant's key is served too."""

BODIES: dict[tuple[str, str], Any] = {
    ("POST", f"{API}/runs"): {"workflow": "greet", "input": "matrix"},
    ("POST", f"{API}/runs/{{run_id}}/signals/{{name}}"): {"data": 1},
    ("POST", f"{API}/approvals/{{approval_id}}/decision"): {"approve": True, "reason": "matrix"},
    ("POST", f"{API}/policies"): {"document": "name: matrix-new\n"},
    ("POST", f"{API}/policies/{{name}}/rollback"): {"version": 1},
    ("POST", f"{API}/policies/test"): {
        "cases": [{"name": "m", "call": {"tool": "t"}, "expect": "allow"}]
    },
    ("POST", f"{API}/pauses"): {"target": "agent:another", "reason": "matrix"},
    ("POST", f"{API}/webhooks"): {
        "url": "http://127.0.0.1:9/hook",
        "event_types": ["run.failed"],
    },
    ("POST", f"{API}/keys"): {"role": "viewer", "name": "made by the matrix"},
    ("PATCH", f"{API}/webhooks/{{webhook_id}}"): {"active": False},
}
"""A valid body for each route that takes one (others get none)."""

QUERIES: dict[tuple[str, str], dict[str, str]] = {
    ("GET", f"{API}/events"): {"once": "true"},  # a stream: answer what there is, then end
    ("GET", f"{API}/search"): {"q": "order"},
    ("GET", f"{API}/policies/{{name}}/diff"): {"from": "1", "to": "1"},
}

GROUP = "finance"


@dataclass
class Tenant:
    """One tenant's objects, which path parameters name."""

    name: str
    run_id: str
    approval_id: str
    key_id: str
    webhook_id: str


def declared() -> dict[tuple[str, str], str | None]:
    """(method, path) → the role the route declares, for every route of the app (the OpenAPI
    document and its page, which are not API routes, are public)."""
    app = create_app(ServerConfig(database_url="sqlite:///unused.db", secret=b"x" * 32))
    found: dict[tuple[str, str], str | None] = {}
    for context in iter_route_contexts(app.routes):
        original = context.original_route
        role = route_role(original) if isinstance(original, APIRoute) else None
        if not isinstance(original, APIRoute) and context.path in DOCS:
            role = PUBLIC
        path = context.path or ""
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found[(method, path)] = role
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
    now = api.clock.now()
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
            now=now,
            dialect=d,
        )
    )
    document = f"name: {policy_of(name)}\n"
    await apply_policy(api.store, name, document, source="matrix", actor="tests", now=now)
    tenant = Tenant(name, handle.run_id, approval.approval_id, key_id="", webhook_id="")
    for path in (
        f"{API}/pauses/{{target}}",
        f"{API}/webhooks/{{webhook_id}}",
        f"{API}/keys/{{key_id}}",
    ):
        await renew(api, tenant, path)
    return tenant


def target_of(tenant: str) -> str:
    """Each tenant pauses an agent of its own name, for the same reason as `policy_of`."""
    return f"agent:matrix-{tenant}"


def policy_of(tenant: str) -> str:
    """Each tenant's policy has its own name: another tenant's policy must not be found by a
    name this tenant also uses."""
    return f"matrix-{tenant}"


async def renew(api: ApiServer, tenant: Tenant, path: str) -> None:
    """Make again the object a DELETE route of `path` removes (an earlier role removed it)."""
    now, name = api.clock.now(), tenant.name
    if path == f"{API}/pauses/{{target}}":
        await api.store.run_script(
            lambda d: pause(name, target_of(name), actor="tests", reason="m", now=now, dialect=d)
        )
    elif path == f"{API}/webhooks/{{webhook_id}}":
        hook = await api.store.run_script(
            lambda d: create_webhook(
                tenant=name,
                url="http://127.0.0.1:9/hook",
                event_types=["run.failed"],
                actor="tests",
                now=now,
                dialect=d,
            )
        )
        tenant.webhook_id = hook.webhook.webhook_id
    elif path == f"{API}/keys/{{key_id}}":
        parsed = parse_token(await api.key("viewer", tenant=name))
        assert parsed is not None
        tenant.key_id = parsed[0]


def fill(path: str, tenant: Tenant | None) -> str:
    """`path` with its parameters naming the tenant's objects (None: objects that do not
    exist)."""
    missing = "does-not-exist"
    if path.startswith((f"{API}/policies/", "/policies/")):
        name = policy_of(tenant.name) if tenant else missing
    elif path.startswith(f"{API}/workflows/"):
        name = "greet" if tenant else missing
    else:
        name = "go"
    values = {
        "run_id": tenant.run_id if tenant else missing,
        "other_run_id": tenant.run_id if tenant else missing,
        "approval_id": tenant.approval_id if tenant else missing,
        "key_id": tenant.key_id if tenant else "zzzzzzzzzzzz",
        "webhook_id": tenant.webhook_id if tenant else missing,
        "target": target_of(tenant.name) if tenant else "agent:nobody",
        "seq": "1",
        "name": name,
    }
    return path.format(**{key: value for key, value in values.items() if "{" + key + "}" in path})


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
            query = QUERIES.get((method, path))
            answer = await anonymous.request(method, fill(path, own), json=body, params=query)
            if answer.status_code != 401:
                mismatches.append(f"{method} {path} without a key: {answer.status_code}")
            for role in ROLES:
                allowed = ROLES.index(role) >= ROLES.index(cast(Role, needed))
                targets: list[tuple[str, Tenant | None]] = [("own", own)]
                if "{" in path:
                    if path not in SHARED:
                        targets.append(("other tenant's", other))
                    targets.append(("missing", None))
                async with api.client(tokens[role]) as http:
                    for label, target in targets:
                        if method == "DELETE" and target is own:
                            await renew(api, own, path)
                        url = fill(path, target)
                        answer = await http.request(method, url, json=body, params=query)
                        if method == "DELETE" and target is own:
                            await renew(api, own, path)  # for the routes that come after
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
    assert mismatches == [], "\n".join(mismatches)
