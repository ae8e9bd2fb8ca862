"""Workflows and agents over HTTP: the ones the server was given, with versions, kinds, and (for
one) its input and output schemas and what an agent is made of. And the OpenAPI declares a role
and an answer for each route of the observe, policy, governance and workflow routers."""

from __future__ import annotations

import pytest

from corral.server import ServerConfig, create_app

from .harness import SECRET, ApiServer

pytestmark = pytest.mark.timeout(60)


async def test_the_servers_workflows_and_agents_are_listed(api: ApiServer) -> None:
    async with api.client(await api.key("viewer", tenant="acme")) as http:
        listed = await http.get("/api/v1/workflows")
        assert listed.status_code == 200, listed.text
        found = {item["name"]: item for item in listed.json()}
        assert list(found) == ["agent:billing", "agent:support", "greet", "wait_for_go"]
        assert (found["greet"]["kind"], found["greet"]["version"]) == ("workflow", "1")
        assert found["greet"]["versions"] == ["1"]
        assert found["greet"]["description"] is None
        assert found["wait_for_go"]["description"] == (
            "Waits for the signal `go` and returns what it carried."
        )
        support = found["agent:support"]
        assert (support["kind"], support["description"]) == (
            "agent",
            "Answers customers about their orders.",
        )


async def test_one_workflow_with_its_schemas_and_agent(api: ApiServer) -> None:
    async with api.client(await api.key("viewer")) as http:
        greet = await http.get("/api/v1/workflows/greet")
        assert greet.status_code == 200, greet.text
        body = greet.json()
        assert (body["input_schema"], body["output_schema"]) == (
            {"type": "string"},
            {"type": "string"},
        )
        assert body["agent"] is None

        support = (await http.get("/api/v1/workflows/agent:support")).json()
        assert support["agent"] == {
            "name": "support",
            "model": "openai:gpt-4o-mini",
            "tools": ["lookup_order", "ask_billing"],
            "handoffs": [],
            "delegates": ["billing"],
            "scopes": [],
            "max_turns": 10,
        }
        assert support["input_schema"] is not None  # an AgentTask or text

        missing = await http.get("/api/v1/workflows/no_such_flow")
        assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
        by_reference = await http.get("/api/v1/workflows/tests.server.workflows:greet")
        assert by_reference.status_code == 404  # only what the server was given
    async with api.client() as anonymous:
        assert (await anonymous.get("/api/v1/workflows")).status_code == 401


def test_every_new_route_declares_a_role_and_an_answer() -> None:
    # The published document, as the app builds it (it is the same on every backend).
    spec = create_app(ServerConfig(database_url="sqlite:///unused.db", secret=SECRET)).openapi()
    roles = {
        (method.upper(), path.removeprefix("/api/v1")): operation["x-corral-role"]
        for path, operations in spec["paths"].items()
        for method, operation in operations.items()
    }
    ours = {
        ("GET", "/runs/{run_id}/trace"): "viewer",
        ("GET", "/runs/{run_id}/summary"): "viewer",
        ("GET", "/runs/{run_id}/steps/{seq}/diff"): "viewer",
        ("GET", "/runs/{run_id}/compare/{other_run_id}"): "viewer",
        ("GET", "/runs/{run_id}/cost"): "viewer",
        ("GET", "/costs"): "viewer",
        ("GET", "/search"): "viewer",
        ("GET", "/policies"): "viewer",
        ("POST", "/policies"): "admin",
        ("POST", "/policies/test"): "viewer",
        ("GET", "/policies/{name}"): "viewer",
        ("GET", "/policies/{name}/versions"): "viewer",
        ("GET", "/policies/{name}/diff"): "viewer",
        ("POST", "/policies/{name}/rollback"): "admin",
        ("GET", "/audit/verify"): "admin",
        ("GET", "/pauses"): "viewer",
        ("POST", "/pauses"): "operator",
        ("DELETE", "/pauses/{target}"): "operator",
        ("GET", "/breakers"): "viewer",
        ("GET", "/metrics"): "admin",
        ("GET", "/workflows"): "viewer",
        ("GET", "/workflows/{name}"): "viewer",
    }
    assert {route: roles.get(route) for route in ours} == ours
    for (method, path), _ in ours.items():
        answers = spec["paths"]["/api/v1" + path][method.lower()]["responses"]["200"]["content"]
        assert answers, (method, path)
    assert list(spec["paths"]["/api/v1/metrics"]["get"]["responses"]["200"]["content"]) == [
        "text/plain; version=0.0.4"
    ]
