"""Governance over HTTP: audit chain verification (a broken chain is a finding, not an error),
kill switches (pause, list, resume; audited; they stop the agent's tool calls), circuit
breakers and Prometheus metrics."""

from __future__ import annotations

import json

import pytest

from corral.governance.verify import recent_entries
from corral.reliability.breaker_store import save_breakers
from corral.reliability.breakers import BreakerSnapshot
from corral.store.scripts import Dialect, Script, Statement

from .harness import ApiServer

pytestmark = pytest.mark.timeout(60)


async def test_the_audit_chain_verifies_until_someone_edits_it(api: ApiServer) -> None:
    admin = await api.key("admin")  # making keys is audited: the chain has entries
    await api.key("operator")
    await api.key("admin", tenant="acme")
    async with api.client(admin) as http:
        verified = await http.get("/api/v1/audit/verify")
        assert verified.status_code == 200, verified.text
        report = verified.json()
        assert (report["ok"], report["tenant"], report["first_bad"]) == (True, "default", None)
        assert report["entries_checked"] == report["head"]["seq"] >= 2

        def tamper(dialect: Dialect) -> Script[None]:
            yield Statement(
                "UPDATE audit_log SET actor = 'human:mallory' WHERE tenant = ? AND seq = 2",
                ("default",),
            )

        await api.store.run_script(tamper)
        broken = await http.get("/api/v1/audit/verify")
        assert broken.status_code == 200
        found = broken.json()
        assert (found["ok"], found["first_bad"]["seq"]) == (False, 2)
        assert found["first_bad"]["reason"]
        assert "entry 2" in found["message"]

    async with api.client(await api.key("admin", tenant="acme")) as acme:
        assert (await acme.get("/api/v1/audit/verify")).json()["ok"] is True
    for role in ("viewer", "operator", "approver"):
        async with api.client(await api.key(role)) as http:
            assert (await http.get("/api/v1/audit/verify")).status_code == 403


async def test_a_pause_stops_the_agents_tool_calls_until_resumed(api: ApiServer) -> None:
    operator = await api.key("operator", principal="ops")
    async with api.client(operator) as http:
        paused = await http.post(
            "/api/v1/pauses", json={"target": "agent:support", "reason": "incident 42"}
        )
        assert paused.status_code == 201, paused.text
        assert paused.json()["paused_by"] == "human:ops"
        again = await http.post(
            "/api/v1/pauses", json={"target": "agent:support", "reason": "again"}
        )
        assert (again.status_code, again.json()["reason"]) == (200, "incident 42")
        listed = (await http.get("/api/v1/pauses")).json()
        assert [(p["target"], p["reason"]) for p in listed] == [("agent:support", "incident 42")]

        run = (
            await http.post("/api/v1/runs", json={"workflow": "agent:support", "input": "A-1"})
        ).json()
        await api.corral().run_until_idle()
        stopped = (await http.get(f"/api/v1/runs/{run['run_id']}")).json()
        assert stopped["status"] == "failed"
        assert stopped["error"]["code"] == "paused"

        resumed = await http.delete("/api/v1/pauses/agent:support", params={"reason": "fixed"})
        assert (resumed.status_code, resumed.json()["target"]) == (200, "agent:support")
        assert (await http.get("/api/v1/pauses")).json() == []
        twice = await http.delete("/api/v1/pauses/agent:support")
        assert (twice.status_code, twice.json()["code"]) == (404, "not_found")

        whole = await http.post("/api/v1/pauses", json={"target": "tenant", "reason": "freeze"})
        assert whole.status_code == 201

    audited = await api.store.read_script(lambda d: recent_entries("default", kind="pause.*"))
    assert [(e.kind, e.subject, json.loads(e.decision)["reason"]) for e in audited] == [
        ("pause.set", "tenant", "freeze"),
        ("pause.cleared", "agent:support", "fixed"),
        ("pause.set", "agent:support", "again"),
        ("pause.set", "agent:support", "incident 42"),
    ]

    async with api.client(await api.key("operator", tenant="acme")) as acme:
        assert (await acme.get("/api/v1/pauses")).json() == []
        theirs = await acme.delete("/api/v1/pauses/tenant")
        assert theirs.status_code == 404
    async with api.client(await api.key("viewer")) as viewer:
        assert [p["target"] for p in (await viewer.get("/api/v1/pauses")).json()] == ["tenant"]
        refused = await viewer.post("/api/v1/pauses", json={"target": "tenant", "reason": "x"})
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        assert (await viewer.delete("/api/v1/pauses/tenant")).status_code == 403
    async with api.client(operator) as http:
        for body in (
            {"target": "robot", "reason": "x"},
            {"target": "agent:", "reason": "x"},
            {"target": "tenant"},
            {"target": "tenant", "reason": ""},
        ):
            invalid = await http.post("/api/v1/pauses", json=body)
            assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_request")
        assert (await http.delete("/api/v1/pauses/robot")).status_code == 422


async def test_breakers_show_every_workers_state(api: ApiServer) -> None:
    now = api.clock.now()
    opened = BreakerSnapshot(PRICED_MODEL, "open", now - 30, 10, 6, 0.6, 1)
    quiet = BreakerSnapshot("mcp:tickets", "closed", now - 5000, 3, 0, 0.0, 0)
    await api.store.run_script(lambda d: save_breakers("worker-1", [opened], now=now))
    await api.store.run_script(lambda d: save_breakers("worker-0", [quiet], now=now - 3600))

    async with api.client(await api.key("viewer", tenant="acme")) as http:
        shown = await http.get("/api/v1/breakers")
        assert shown.status_code == 200, shown.text
        body = shown.json()
        assert body["stale_hidden"] == 1
        [row] = body["breakers"]
        assert (row["dependency"], row["worker"], row["state"]) == (
            PRICED_MODEL,
            "worker-1",
            "open",
        )
        assert (row["calls"], row["failures"], row["failure_rate"], row["stale"]) == (
            10,
            6,
            0.6,
            False,
        )
        every = (await http.get("/api/v1/breakers", params={"include_stale": "true"})).json()
        assert [(b["dependency"], b["stale"]) for b in every["breakers"]] == [
            ("mcp:tickets", True),
            (PRICED_MODEL, False),
        ]
        assert every["stale_hidden"] == 0
        wrong = await http.get("/api/v1/breakers", params={"include_stale": "maybe"})
        assert wrong.status_code == 422
    async with api.client() as anonymous:
        assert (await anonymous.get("/api/v1/breakers")).status_code == 401


PRICED_MODEL = "openai:gpt-4o-mini"


async def test_metrics_are_prometheus_text_for_admins(api: ApiServer) -> None:
    operator = await api.key("operator")
    async with api.client(operator) as http:
        await http.post("/api/v1/runs", json={"workflow": "agent:support", "input": "A-1"})
    await api.corral().run_until_idle()
    async with api.client(await api.key("admin", tenant="acme")) as http:
        scraped = await http.get("/api/v1/metrics")
        assert scraped.status_code == 200, scraped.text
        assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
        # Every tenant's numbers: acme's key sees the default tenant's agent.
        assert 'agent="support"' in scraped.text
        assert "# TYPE" in scraped.text
    async with api.client(operator) as http:
        refused = await http.get("/api/v1/metrics")
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
