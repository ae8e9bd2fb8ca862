"""The runs API over HTTP: start (idempotent), list by cursor, get, signal, cancel, journal;
tenants see only their own runs; bad keys, bad bodies and stale cursors get problems."""

from __future__ import annotations

import pytest

from .harness import ApiServer

pytestmark = pytest.mark.timeout(60)


async def test_start_get_and_finish_a_run(api: ApiServer) -> None:
    token = await api.key("operator")
    async with api.client(token) as http:
        started = await http.post(
            "/api/v1/runs", json={"workflow": "greet", "input": "Ada", "idempotency_key": "k1"}
        )
        assert started.status_code == 201, started.text
        run = started.json()
        assert run["status"] == "pending"
        assert started.headers["location"] == f"/api/v1/runs/{run['run_id']}"
        again = await http.post(
            "/api/v1/runs", json={"workflow": "greet", "input": "Bob", "idempotency_key": "k1"}
        )
        assert (again.status_code, again.json()["run_id"]) == (200, run["run_id"])

        await api.corral().run_until_idle()
        got = await http.get(f"/api/v1/runs/{run['run_id']}")
        assert got.status_code == 200
        assert (got.json()["status"], got.json()["result"]) == ("succeeded", "hello Ada")
        assert got.json()["started_by"].startswith("key:")
        journal = await http.get(f"/api/v1/runs/{run['run_id']}/journal")
        assert journal.status_code == 200
        assert journal.json()["run_id"] == run["run_id"]


async def test_signal_and_cancel(api: ApiServer) -> None:
    token = await api.key("operator")
    async with api.client(token) as http:
        first = (
            await http.post("/api/v1/runs", json={"workflow": "wait_for_go", "input": "A-1"})
        ).json()
        second = (
            await http.post("/api/v1/runs", json={"workflow": "wait_for_go", "input": "A-2"})
        ).json()
        await api.corral().run_until_idle()
        sent = await http.post(f"/api/v1/runs/{first['run_id']}/signals/go", json={"data": 7})
        assert sent.status_code == 201, sent.text
        await api.corral().run_until_idle()
        done = (await http.get(f"/api/v1/runs/{first['run_id']}")).json()
        assert done["result"] == {"order": "A-1", "go": 7}

        forged = await http.post(
            f"/api/v1/runs/{second['run_id']}/signals/approval:abc", json={"data": {}}
        )
        assert (forged.status_code, forged.json()["code"]) == (422, "invalid_input")
        cancelled = await http.post(f"/api/v1/runs/{second['run_id']}/cancel")
        assert (cancelled.status_code, cancelled.json()["status"]) == (200, "cancelled")
        late = await http.post(f"/api/v1/runs/{first['run_id']}/cancel")
        assert (late.status_code, late.json()["code"]) == (409, "run_finished")


async def test_lists_page_by_cursor_and_stay_in_the_tenant(api: ApiServer) -> None:
    ours, theirs = await api.key("operator"), await api.key("operator", tenant="acme")
    async with api.client(ours) as http, api.client(theirs) as other:
        made = [
            (await http.post("/api/v1/runs", json={"workflow": "greet", "input": str(i)})).json()
            for i in range(5)
        ]
        api.clock.advance(1)
        foreign = (
            await other.post("/api/v1/runs", json={"workflow": "greet", "input": "x"})
        ).json()

        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = (await http.get("/api/v1/runs", params=params)).json()
            seen += [run["run_id"] for run in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(run["run_id"] for run in made)
        assert foreign["run_id"] not in seen

        # Another tenant's run answers exactly like a run that does not exist.
        theirs_answer = await http.get(f"/api/v1/runs/{foreign['run_id']}")
        nobodys = await http.get("/api/v1/runs/no-such-run")
        assert theirs_answer.status_code == nobodys.status_code == 404
        assert theirs_answer.json() | {"instance": ""} == nobodys.json() | {"instance": ""}

        filtered = await http.get("/api/v1/runs", params={"limit": 2, "status": "pending"})
        wrong_list = await http.get(
            "/api/v1/runs", params={"cursor": filtered.json()["next_cursor"]}
        )
        assert (wrong_list.status_code, wrong_list.json()["code"]) == (400, "invalid_cursor")
        forged = await http.get("/api/v1/runs", params={"cursor": "abc.def"})
        assert (forged.status_code, forged.json()["code"]) == (400, "invalid_cursor")


async def test_an_expired_cursor_is_refused(api: ApiServer) -> None:
    token = await api.key("viewer")
    operator = await api.key("operator")
    async with api.client(operator) as http:
        for i in range(3):
            await http.post("/api/v1/runs", json={"workflow": "greet", "input": str(i)})
    async with api.client(token) as http:
        page = (await http.get("/api/v1/runs", params={"limit": 1})).json()
        api.clock.advance(3601)
        stale = await http.get("/api/v1/runs", params={"limit": 1, "cursor": page["next_cursor"]})
        assert (stale.status_code, stale.json()["code"]) == (400, "cursor_expired")
        assert stale.headers["content-type"] == "application/problem+json"


async def test_keys_roles_and_bad_requests_get_problems(api: ApiServer) -> None:
    viewer = await api.key("viewer")
    async with api.client() as anonymous:
        missing = await anonymous.get("/api/v1/runs")
        assert (missing.status_code, missing.json()["code"]) == (401, "unauthorized")
        assert missing.headers["www-authenticate"].startswith("Bearer")
        wrong = await anonymous.get(
            "/api/v1/runs", headers={"Authorization": f"Bearer {viewer[:-4]}abcd"}
        )
        garbage = await anonymous.get("/api/v1/runs", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == garbage.status_code == 401
        assert wrong.json()["detail"] == garbage.json()["detail"]
        health = await anonymous.get("/api/v1/health")
        assert health.json() == {"status": "ok", "database": "ok"}
    async with api.client(viewer) as http:
        refused = await http.post("/api/v1/runs", json={"workflow": "greet"})
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
    operator = await api.key("operator")
    async with api.client(operator) as http:
        malformed = await http.post(
            "/api/v1/runs", content=b"{not json", headers={"content-type": "application/json"}
        )
        assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed_json")
        invalid = await http.post("/api/v1/runs", json={"workflow": ""})
        assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_request")
        assert invalid.json()["errors"][0]["loc"] == ["body", "workflow"]
        unknown = await http.post("/api/v1/runs", json={"workflow": "no_such_flow"})
        assert unknown.status_code == 404
        huge = await http.post("/api/v1/runs", json={"workflow": "greet", "input": "x" * (2 << 20)})
        assert (huge.status_code, huge.json()["code"]) == (413, "body_too_large")


async def test_request_bodies_take_json_types_as_they_are(api: ApiServer) -> None:
    """A body field of the wrong JSON type is refused, not coerced: `true` is no number of days,
    `1` is no boolean, `"yes"` is no approval (Schemathesis found `expires_in_days: true`
    accepted as one day)."""
    async with api.client(await api.key("admin")) as http:
        refusals: list[tuple[str, str, dict[str, object]]] = [
            ("POST", "/api/v1/keys", {"role": "viewer", "name": "x", "expires_in_days": True}),
            ("POST", "/api/v1/keys", {"role": "viewer", "name": "x", "expires_in_days": "7"}),
            ("POST", "/api/v1/runs", {"workflow": 7}),
            ("PATCH", "/api/v1/webhooks/wh_missing", {"active": 1}),
            ("POST", "/api/v1/approvals/ap_missing/decision", {"approve": "yes", "reason": "ok"}),
        ]
        for method, path, body in refusals:
            refused = await http.request(method, path, json=body)
            assert (refused.status_code, refused.json()["code"]) == (422, "invalid_request"), (
                path,
                body,
            )
        days = await http.post(
            "/api/v1/keys", json={"role": "viewer", "name": "x", "expires_in_days": 7}
        )
        assert days.status_code == 201, days.text  # an integer is a number of days
