"""Row-level security through the real server (PostgreSQL): each request with a key runs in the
key's tenant scope. The API's own routes still work, and a route that forgets its tenant filter
(added here: the shipped routes all filter) reads and changes its caller's tenant only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import APIRouter, Request

from corral.server.routing import route
from corral.server.state import state_of
from corral.store import Store, scoped_tenant
from corral.store.scripts import Script, Statement
from corral.testing import FakeClock

from .harness import ApiServer, serving
from .workflows import WORKFLOWS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def backend() -> str:
    """PostgreSQL only: SQLite has no row-level security (the scope is a no-op there)."""
    return "postgresql"


# -- a route that forgot its tenant filter --------------------------------------------------------

forgetful = APIRouter()


def _rows(query: str) -> Any:
    def script(dialect: str) -> Script[list[tuple[Any, ...]]]:
        result = yield Statement(query)
        return result.rows

    return script


def _changed(query: str) -> Any:
    def script(dialect: str) -> Script[int]:
        result = yield Statement(query)
        return result.rowcount

    return script


@route(forgetful, "GET", "/forgetful", "viewer")
async def read_everything(request: Request) -> dict[str, Any]:
    store = state_of(request).store
    runs = await store.list_runs()
    approvals = await store.read_script(_rows("SELECT approval_id FROM approvals"))
    return {
        "scope": scoped_tenant(),
        "runs": sorted(run.run_id for run in runs),
        "approvals": sorted(row[0] for row in approvals),
    }


@route(forgetful, "POST", "/forgetful/fail-every-run", "operator")
async def fail_everything(request: Request) -> int:
    store = state_of(request).store
    changed: int = await store.run_script(_changed("UPDATE runs SET error = 'forgotten filter'"))
    return changed


@pytest.fixture
async def rls_api(store: Store, clock: FakeClock) -> AsyncIterator[ApiServer]:
    async with serving(store, clock, workflows=WORKFLOWS, extra_routers=[forgetful]) as server:
        yield server


async def start(http: Any, workflow: str, data: str) -> str:
    started = await http.post("/api/v1/runs", json={"workflow": workflow, "input": data})
    assert started.status_code == 201, started.text
    run_id: str = started.json()["run_id"]
    return run_id


# -- tests ----------------------------------------------------------------------------------------


async def test_the_api_works_in_the_scope_and_stays_in_the_tenant(rls_api: ApiServer) -> None:
    api = rls_api
    await api.principal("fin", roles=("approver",), groups=("finance",))
    ours = await api.key("approver", principal="fin")
    theirs = await api.key("operator", tenant="acme")
    async with api.client(ours) as http, api.client(theirs) as other:
        mine = await start(http, "wait_for_go", "A-1")
        foreign = await start(other, "wait_for_go", "B-1")
        await api.corral().run_until_idle()
        await api.corral("acme").run_until_idle()

        listed = (await http.get("/api/v1/runs")).json()["items"]
        assert [run["run_id"] for run in listed] == [mine]
        assert (await http.get(f"/api/v1/runs/{mine}")).status_code == 200
        assert (await http.get(f"/api/v1/runs/{foreign}")).status_code == 404
        assert (await http.get(f"/api/v1/runs/{mine}/journal")).status_code == 200

        asked = await api.ask_approval(tenant="default", run_id=mine)
        hidden = await api.ask_approval(tenant="acme", run_id=foreign)
        inbox = (await http.get("/api/v1/approvals")).json()["items"]
        assert [a["approval_id"] for a in inbox] == [asked.approval_id]
        assert (await http.get(f"/api/v1/approvals/{hidden.approval_id}")).status_code == 404

        # A write through the group-committed writer, in the scope: the decision lands.
        decided = await http.post(
            f"/api/v1/approvals/{asked.approval_id}/decision",
            json={"approve": True, "reason": "fine"},
        )
        assert decided.status_code == 200, decided.text
        refused = await http.post(
            f"/api/v1/approvals/{hidden.approval_id}/decision",
            json={"approve": True, "reason": "not mine"},
        )
        assert refused.status_code == 404
    waiting = await api.store.read_script(_rows("SELECT status FROM approvals ORDER BY tenant"))
    assert waiting == [("pending",), ("approved",)]  # acme's, then default's


async def test_a_route_that_forgets_the_tenant_filter_sees_only_its_callers_rows(
    rls_api: ApiServer,
) -> None:
    api = rls_api
    ours, theirs = await api.key("operator"), await api.key("operator", tenant="acme")
    async with api.client(ours) as http, api.client(theirs) as other:
        mine = await start(http, "greet", "Ada")
        foreign = await start(other, "greet", "Bob")
        asked = await api.ask_approval(tenant="default", run_id=mine)
        await api.ask_approval(tenant="acme", run_id=foreign)

        seen = await http.get("/api/v1/forgetful")
        assert seen.status_code == 200, seen.text
        assert seen.json() == {
            "scope": "default",
            "runs": [mine],
            "approvals": [asked.approval_id],
        }
        assert (await other.get("/api/v1/forgetful")).json()["runs"] == [foreign]

        failed = await http.post("/api/v1/forgetful/fail-every-run")
        assert (failed.status_code, failed.json()) == (200, 1)

    # Outside any request, the test (like a worker) sees both tenants, and the one change.
    assert scoped_tenant() is None
    runs = {run.run_id: run for run in await api.store.list_runs()}
    assert set(runs) == {mine, foreign}
    assert (runs[mine].error, runs[foreign].error) == ("forgotten filter", None)
