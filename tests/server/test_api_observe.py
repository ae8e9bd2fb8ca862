"""Reading runs over HTTP: trace, summary, step diff, comparison and cost of a run; the cost
report and search of a tenant. Another tenant's run answers like a missing one; reports and
searches never leave the key's tenant; bad input is a 4xx problem."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from corral.observe.indexer import INDEX_INTERVAL
from corral.observe.search import search_runs
from corral.store import Store
from corral.testing import FakeClock

from .harness import ApiServer, serving
from .workflows import PRICED, WORKFLOWS

pytestmark = pytest.mark.timeout(60)

CALL_COST = 0.00045
"""What one call of the support agent's model costs (1,000 input, 500 output tokens)."""


async def support_run(api: ApiServer, order: str = "A-1", *, tenant: str = "default") -> str:
    """Run the support agent (3 model calls, a tool call, a delegation to billing) to its end."""
    token = await api.key("operator", tenant=tenant)
    async with api.client(token) as http:
        started = await http.post(
            "/api/v1/runs",
            json={"workflow": "agent:support", "input": f"Where is my order {order}"},
        )
        assert started.status_code == 201, started.text
    await api.corral(tenant).run_until_idle()
    run_id: str = started.json()["run_id"]
    return run_id


def names(span: dict[str, Any], depth: int = 0) -> list[tuple[int, str]]:
    """The span tree as (depth, name), parents before children."""
    rows = [(depth, span["name"])]
    for child in span["children"]:
        rows += names(child, depth + 1)
    return rows


async def test_trace_summary_and_cost_of_a_run(api: ApiServer) -> None:
    run_id = await support_run(api)
    async with api.client(await api.key("viewer")) as http:
        trace = await http.get(f"/api/v1/runs/{run_id}/trace")
        assert trace.status_code == 200, trace.text
        body = trace.json()
        chat = f"chat {PRICED}"
        assert names(body["root"]) == [
            (0, "invoke_agent support"),
            (1, chat),
            (1, "execute_tool lookup_order"),
            (1, chat),
            (1, "execute_tool ask_billing"),
            (2, "invoke_agent billing"),
            (3, chat),
            (1, "child.result agent:billing"),
            (1, chat),
        ]
        assert (body["spans"], body["run_id"], body["root"]["status"]) == (9, run_id, "ok")
        assert body["totals"]["model_calls"] == 4
        assert body["totals"]["total_tokens"] == 6000
        assert body["totals"]["cost_usd"] == pytest.approx(4 * CALL_COST)
        first_call = body["root"]["children"][0]
        assert (first_call["seq"], first_call["input_tokens"]) == (1, 1000)
        assert first_call["duration"] is not None

        summary = await http.get(f"/api/v1/runs/{run_id}/summary")
        assert summary.status_code == 200, summary.text
        told = summary.json()
        assert told["status"] == "succeeded"
        assert told["agents"][0] == "support (3 model calls)"
        assert len(told["runs"]) == 2
        assert told["cost"]["tokens"] == 6000
        assert "lookup_order was called" in told["text"]

        cost = await http.get(f"/api/v1/runs/{run_id}/cost")
        assert cost.status_code == 200, cost.text
        spent = cost.json()
        assert (spent["total"]["model_calls"], spent["total"]["runs"]) == (4, 2)
        assert spent["own"]["model_calls"] == 3
        assert spent["total"]["cost_usd"] == pytest.approx(4 * CALL_COST)
        assert {row["key"]: row["model_calls"] for row in spent["by_agent"]} == {
            "support": 3,
            "billing": 1,
        }
        assert [row["key"] for row in spent["by_model"]] == [PRICED]


async def test_a_step_diff_shows_the_messages_it_added(api: ApiServer) -> None:
    run_id = await support_run(api)
    async with api.client(await api.key("viewer")) as http:
        diff = await http.get(f"/api/v1/runs/{run_id}/steps/1/diff")
        assert diff.status_code == 200, diff.text
        body = diff.json()
        assert (body["name"], body["category"], body["agent"]) == (
            "model:support",
            "model",
            "support",
        )
        assert body["messages"]["before"] == 1
        [added] = body["messages"]["added"]
        assert added["role"] == "assistant"
        assert added["tool_calls"][0]["name"] == "lookup_order"
        assert added["tool_calls"][0]["arguments"] == {"order_id": "A-1"}
        assert body["memory"]["changes"] == []

        tool_result = (await http.get(f"/api/v1/runs/{run_id}/steps/2/diff")).json()
        assert tool_result["messages"]["added"][0]["role"] == "tool"

        beyond = await http.get(f"/api/v1/runs/{run_id}/steps/99/diff")
        assert (beyond.status_code, beyond.json()["code"]) == (404, "not_found")
        zero = await http.get(f"/api/v1/runs/{run_id}/steps/0/diff")
        assert (zero.status_code, zero.json()["code"]) == (422, "invalid_request")
        word = await http.get(f"/api/v1/runs/{run_id}/steps/first/diff")
        assert word.status_code == 422


async def test_two_runs_compare_at_their_first_difference(api: ApiServer) -> None:
    late, shipped = await support_run(api, "A-1"), await support_run(api, "A-2")
    operator = await api.key("operator")
    async with api.client(operator) as http:
        greeting = (
            await http.post("/api/v1/runs", json={"workflow": "greet", "input": "x"})
        ).json()
    async with api.client(await api.key("viewer")) as http:
        compared = await http.get(f"/api/v1/runs/{late}/compare/{shipped}")
        assert compared.status_code == 200, compared.text
        body = compared.json()
        assert (body["identical"], body["workflow"], body["position"]) == (
            False,
            "agent:support",
            1,
        )
        assert body["aspect"] in ("arguments", "result")
        assert (body["a"]["run_id"], body["b"]["run_id"]) == (late, shipped)
        assert "first differ at step 1" in body["text"]

        itself = (await http.get(f"/api/v1/runs/{late}/compare/{late}")).json()
        assert itself["identical"] is True
        assert itself["steps_compared"] == 6

        mixed = await http.get(f"/api/v1/runs/{late}/compare/{greeting['run_id']}")
        assert mixed.status_code == 422
        assert "different workflows" in mixed.json()["detail"]


async def test_another_tenants_run_is_not_found_on_every_view(api: ApiServer) -> None:
    ours, theirs = await support_run(api), await support_run(api, tenant="acme")
    paths = [
        "/api/v1/runs/{}/trace",
        "/api/v1/runs/{}/summary",
        "/api/v1/runs/{}/steps/1/diff",
        "/api/v1/runs/{}/cost",
        "/api/v1/runs/{}/compare/" + ours,
        f"/api/v1/runs/{ours}/compare/" + "{}",
    ]
    async with api.client(await api.key("viewer")) as http:
        for path in paths:
            foreign = await http.get(path.format(theirs))
            missing = await http.get(path.format("no-such-run"))
            assert foreign.status_code == missing.status_code == 404, path
            assert foreign.json() | {"instance": ""} == missing.json() | {"instance": ""}
            assert theirs not in foreign.json()["detail"]
        too_long = await http.get(f"/api/v1/runs/{'x' * 201}/trace")
        assert (too_long.status_code, too_long.json()["code"]) == (422, "invalid_request")
    async with api.client() as anonymous:
        assert (await anonymous.get(f"/api/v1/runs/{ours}/trace")).status_code == 401


async def test_the_cost_report_stays_in_the_tenant(api: ApiServer) -> None:
    await support_run(api, "A-1")
    await support_run(api, "A-2")
    await support_run(api, "A-3", tenant="acme")
    async with api.client(await api.key("viewer")) as http:
        by_agent = await http.get("/api/v1/costs")
        assert by_agent.status_code == 200, by_agent.text
        report = by_agent.json()
        assert (report["by"], report["tenant"]) == ("agent", "default")
        assert [(row["key"], row["model_calls"]) for row in report["rows"]] == [
            ("support", 6),
            ("billing", 2),
        ]
        assert report["total"]["model_calls"] == 8
        assert report["total"]["runs"] is None  # a run holds calls of both agents
        assert report["total"]["cost_usd"] == pytest.approx(8 * CALL_COST)

        by_tenant = (await http.get("/api/v1/costs", params={"by": "tenant"})).json()
        assert [(row["key"], row["runs"]) for row in by_tenant["rows"]] == [("default", 2)]
        assert by_tenant["total"]["runs"] == 2

        recent = (await http.get("/api/v1/costs", params={"since": "7d", "by": "model"})).json()
        assert [row["key"] for row in recent["rows"]] == [PRICED]
        assert recent["since"] is not None
        api.clock.advance(2 * 86400)
        stale = (await http.get("/api/v1/costs", params={"since": "1d"})).json()
        assert (stale["rows"], stale["total"]["model_calls"]) == ([], 0)
        dated = await http.get(
            "/api/v1/costs", params={"since": "2023-11-01", "until": "2023-11-30T00:00:00Z"}
        )
        assert dated.json()["total"]["model_calls"] == 8

        for params in (
            {"by": "colour"},
            {"since": "yesterday"},
            {"since": "1d", "until": "7d"},
        ):
            refused = await http.get("/api/v1/costs", params=params)
            assert refused.status_code == 422, params
            assert refused.headers["content-type"] == "application/problem+json"
        assert (
            "since 'yesterday'"
            in (await http.get("/api/v1/costs", params={"since": "yesterday"})).json()["detail"]
        )


async def test_search_finds_the_tenants_runs_only(api: ApiServer) -> None:
    late = await support_run(api, "A-1")
    await support_run(api, "A-2")
    foreign = await support_run(api, "B-1", tenant="acme")
    async with api.client(await api.key("viewer")) as http:
        found = await http.get("/api/v1/search", params={"q": "late"})
        assert found.status_code == 200, found.text
        hits = found.json()["hits"]
        assert [hit["run_id"] for hit in hits] == [late]
        assert "«late»" in hits[0]["snippet"]
        assert hits[0]["workflow"] == "agent:support"

        everywhere = (await http.get("/api/v1/search", params={"q": "order"})).json()
        assert len(everywhere["hits"]) == 4  # the two runs and their billing children
        assert foreign not in {hit["run_id"] for hit in everywhere["hits"]}
        both = await http.get("/api/v1/search", params={"q": "order", "agent": "support"})
        assert [hit["workflow"] for hit in both.json()["hits"]] == ["agent:support"] * 2
        one = (await http.get("/api/v1/search", params={"q": "order", "limit": 1})).json()
        assert len(one["hits"]) == 1
        filtered = await http.get(
            "/api/v1/search",
            params={"q": "order", "status": "failed", "tool": "lookup_order", "since": "1h"},
        )
        assert filtered.json()["hits"] == []

        refusals: list[dict[str, str | int]] = [
            {"q": "!!! ---"},
            {"q": ""},
            {},
            {"q": "late", "limit": 0},
            {"q": "late", "status": "sleepy"},
            {"q": "late", "until": "soon"},
        ]
        for params in refusals:
            refused = await http.get("/api/v1/search", params=params)
            assert refused.status_code == 422, (params, refused.text)
        nothing = await http.get("/api/v1/search", params={"q": "!!! ---"})
        assert "no word" in nothing.json()["detail"]


async def test_indexing_in_one_tenants_request_indexes_every_tenant(api: ApiServer) -> None:
    """The search index and the cost roll-up are brought up to date by whichever request comes
    first; on PostgreSQL that request runs in its key's tenant scope, yet the indexing must
    cover every tenant's steps, or the next tenant would find its runs missing for good."""
    ours = await support_run(api, "A-1")
    theirs = await support_run(api, "B-1", tenant="acme")
    api.clock.advance(2 * 3600)  # the calls' hour is over: the roll-up sums it
    async with api.client(await api.key("viewer")) as http:
        found = (await http.get("/api/v1/search", params={"q": "order"})).json()["hits"]
        assert ours in {hit["run_id"] for hit in found}
        assert (await http.get("/api/v1/costs")).json()["total"]["model_calls"] == 4
    async with api.client(await api.key("viewer", tenant="acme")) as http:
        found = (await http.get("/api/v1/search", params={"q": "order"})).json()["hits"]
        assert theirs in {hit["run_id"] for hit in found}
        report = (await http.get("/api/v1/costs")).json()
        assert (report["tenant"], report["total"]["model_calls"]) == ("acme", 4)


async def test_the_server_indexes_in_the_background(store: Store, clock: FakeClock) -> None:
    """With its indexer on (the default), the server brings the index up to date on its own
    clock: a run's steps are in it before anybody searches."""

    async def indexed() -> set[str]:
        hits = await search_runs(store, "order", tenant=None, index_first=False)
        return {hit.run_id for hit in hits}

    async with serving(store, clock, workflows=WORKFLOWS, indexer=True) as api:
        ours = await support_run(api, "A-1")
        theirs = await support_run(api, "B-1", tenant="acme")
        for _ in range(500):
            if {ours, theirs} <= await indexed():
                break
            clock.advance(INDEX_INTERVAL)
            await asyncio.sleep(0.01)
        assert {ours, theirs} <= await indexed()  # with their billing agents' child runs
