"""The web UI over HTTP, on both backends: signing in and out, every page rendered for a
signed-in viewer (with the demo's refund waiting, and on an empty store), the login redirect
without a session, error pages, tenant isolation, and the static files."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.demo.fleet import POLICY_FILE
from corral.governance.audit import read_entries
from corral.governance.policy_store import apply_policy
from corral.server.security import SESSION_COOKIE, UI_HEADER
from corral.store import Store
from corral.testing import FakeClock

from .harness import ApiServer
from .ui_harness import (
    LARGE_REFUND_TICKET,
    browser,
    demo_server,
    refund_waiting,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def demo_api(
    store: Store, clock: FakeClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[ApiServer]:
    async with demo_server(store, clock, tmp_path, monkeypatch) as server:
        yield server


PAGES = [
    "/",
    "/runs",
    "/runs/some-run",
    "/approvals",
    "/approvals/some-id",
    "/policies",
    "/policies/support",
    "/workflows",
]


async def test_pages_send_a_browser_without_a_session_to_the_login_page(api: ApiServer) -> None:
    async with browser(api) as anonymous, browser(api, "crl_not_a_real_key") as forged:
        for path in PAGES:
            for client in (anonymous, forged):
                answer = await client.get(path, params={"a": "1"} if path == "/runs" else None)
                assert answer.status_code == 303, (path, answer.text)
                expected = "/login?next=" + ("%2Fruns%3Fa%3D1" if path == "/runs" else "")
                assert answer.headers["location"].startswith(expected), answer.headers
        login = await anonymous.get("/login", params={"next": "/approvals"})
        assert login.status_code == 200
        assert 'data-next="/approvals"' in login.text
        assert "Paste an API key" in login.text
        offsite = await anonymous.get("/login", params={"next": "//evil.example/x"})
        assert 'data-next="/"' in offsite.text
    # A client that does not ask for HTML gets the API's problem, as for any route.
    async with api.client() as script:
        answer = await script.get("/runs")
        assert answer.status_code == 401
        assert answer.headers["content-type"].startswith("application/problem+json")


async def test_signing_in_sets_a_strict_session_cookie_and_signing_out_clears_it(
    api: ApiServer,
) -> None:
    await api.principal("ada", roles=("admin",))
    token = await api.key("viewer", principal="ada")
    async with browser(api) as client:
        forged = await client.post("/login", json={"token": token})
        assert (forged.status_code, forged.json()["code"]) == (403, "csrf")
        wrong = await client.post("/login", json={"token": "crl_nope"}, headers={UI_HEADER: "1"})
        assert wrong.status_code == 401
        assert "that key is not valid" in wrong.json()["detail"]
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
        empty = await client.post("/login", json={"token": ""}, headers={UI_HEADER: "1"})
        assert empty.status_code == 422

        signed = await client.post("/login", json={"token": token}, headers={UI_HEADER: "1"})
        assert signed.status_code == 200, signed.text
        assert signed.json() == {"tenant": "default", "principal": "ada", "role": "viewer"}
        cookie = signed.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}={token};")
        assert "HttpOnly" in cookie
        assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
        assert "Path=/" in cookie
        assert "Secure" not in cookie  # the test server is plain HTTP

        entries = await api.store.read_script(lambda d: read_entries("default"))
        used = [json.loads(e.decision) for e in entries if e.kind == "key.used"]
        assert used == [{"action": "POST /login", "status": 200}]  # signing in is audited

        client.cookies.set(SESSION_COOKIE, token)
        home = await client.get("/")
        assert home.status_code == 200
        assert ">ada<" in home.text
        assert "viewer · tenant default" in home.text

        out = await client.post("/logout", headers={UI_HEADER: "1"})
        assert out.status_code == 200
        assert re.search(rf'{SESSION_COOKIE}="?"?;.*Max-Age=0', out.headers["set-cookie"])


async def test_every_page_has_an_empty_state_on_a_new_store(api: ApiServer) -> None:
    token = await api.key("viewer")
    async with browser(api, token) as client:
        expected = {
            "/": ["Nothing waits for a person.", "No runs yet.", "Every breaker is closed."],
            "/runs": ["No runs yet: start one with"],
            "/runs?status=failed": ["No runs match these filters."],
            "/runs?q=refund": ["No run matches “refund”."],
            "/approvals": ["Nothing waits for approval."],
            "/approvals?status=rejected": ["No rejected requests."],
            "/policies": ["No policies yet"],
            "/workflows": ["greet", "wait_for_go"],
        }
        for path, texts in expected.items():
            page = await client.get(path)
            assert page.status_code == 200, (path, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert "script-src 'self'" in page.headers["content-security-policy"]
            for text in texts:
                assert text in page.text, (path, text)


async def test_pages_show_the_demo_refund_waiting_for_finance(demo_api: ApiServer) -> None:
    api = demo_api
    refund = await refund_waiting(api)
    viewer, finn = await api.key("viewer"), await api.key("approver", principal="finn")
    async with browser(api, viewer) as client:
        home = (await client.get("/")).text
        assert f'href="/approvals#approval-{refund.approval_id}"' in home
        assert "issue_refund" in home
        assert "124900" in home
        assert re.search(r'tile-count">3</span>\s*<span class="tile-label">waiting', home)

        inbox = (await client.get("/approvals")).text
        card = inbox[inbox.index(f'id="approval-{refund.approval_id}"') :]
        for text in (
            "issue_refund",
            "&#34;amount_cents&#34;: 124900",  # pretty-printed, one key per line
            "Refunds over $500 are checked by finance before the money leaves.",
            "large-refunds-need-approval",
            'href="/policies/support"',
            "finance",
            "then escalate to finance-leads",
        ):
            assert text in card, text
        assert "data-decide" not in inbox  # a viewer's key cannot decide
        assert "an approver's key is needed" in inbox

        run = (await client.get(f"/runs/{refund.root_run_id}")).text
        for text in (
            "handle_ticket",
            LARGE_REFUND_TICKET,
            'data-status="waiting"',
            "Waiting for approval:",
            "What was asked",
            'class="timeline"',
            'class="tree"',
            "invoke_agent refunds",
            "Conversation diff",
            "approval:issue_refund",
            f'data-run-ids="{refund.root_run_id}',
            "[redacted:email]",  # payloads are redacted
        ):
            assert text in run, text
        assert "alan@example.com" not in run

        child = (await client.get(f"/runs/{refund.refund_run_id}")).text
        assert f'href="/runs/{refund.root_run_id}"' in child  # back to the root run

        started = (await client.get("/runs", params={"status": "waiting"})).text
        assert started.count('data-status="waiting"') == 1  # runs people started
        every = (await client.get("/runs", params={"status": "waiting", "scope": "all"})).text
        assert every.count('data-status="waiting"') == 3  # with the agents' child runs
        assert f'child of <a class="mono" href="/runs/{refund.root_run_id}"' in every
        found = (await client.get("/runs", params={"q": "sofa"})).text
        assert "<mark>" in found, found
        assert "/runs/" in found

        policies = (await client.get("/policies")).text
        assert 'href="/policies/support"' in policies
        policy = (await client.get("/policies/support")).text
        assert "large-refunds-need-approval" in policy
        assert "is the first version" in policy

        workflows = (await client.get("/workflows")).text
        assert "handle_ticket" in workflows
        assert "agent:refunds" in workflows

    async with browser(api, finn) as client:
        inbox = (await client.get(f"/approvals/{refund.approval_id}")).text
        assert f'data-decide="{refund.approval_id}"' in inbox
        assert "not among the approvers" not in inbox
    ada = await api.key("approver", principal="ada")  # an admin, but not in finance
    async with browser(api, ada) as client:
        inbox = (await client.get("/approvals")).text
        assert "not among the approvers (finance)" in inbox


async def test_error_pages_and_other_tenants(demo_api: ApiServer) -> None:
    api = demo_api
    refund = await refund_waiting(api)
    ours, theirs = await api.key("viewer"), await api.key("viewer", tenant="acme")
    async with browser(api, theirs) as client:
        for path in (f"/runs/{refund.root_run_id}", f"/approvals/{refund.approval_id}"):
            page = await client.get(path)
            assert page.status_code == 404, path
            assert "Not found" in page.text
            assert "in this tenant" in page.text
        home = (await client.get("/")).text
        assert "No runs yet." in home
        assert "Nothing waits for a person." in home
        assert "Nothing waits for approval." in (await client.get("/approvals")).text
        assert "No policies yet" in (await client.get("/policies")).text
        assert "/policies/support" not in (await client.get("/policies/support")).text
        assert (await client.get("/policies/support")).status_code == 404
        found = (await client.get("/runs", params={"q": "sofa"})).text
        assert "No run matches" in found
    async with browser(api, ours) as client:
        missing = await client.get("/runs/no-such-run")
        assert missing.status_code == 404
        assert "no such run in this tenant" in missing.text
        stale = await client.get("/runs", params={"cursor": "garbage"})
        assert stale.status_code == 400
        assert "Start the list again" in stale.text
        empty_search = await client.get("/runs", params={"q": "-sofa"})
        assert empty_search.status_code == 400
        assert "no word that must appear" in empty_search.text
        bad_status = await client.get("/runs", params={"status": "bogus"})
        assert bad_status.status_code == 200
        assert "There is no status" in bad_status.text
        bad_tab = await client.get("/approvals", params={"status": "bogus"})
        assert bad_tab.status_code == 422
        assert "no approval status" in bad_tab.text
        bad_version = await client.get("/policies/support", params={"b": "9"})
        assert bad_version.status_code == 404
        assert "has no version 9" in bad_version.text
        bad_number = await client.get("/policies/support", params={"b": "two"})
        assert bad_number.status_code == 422
        assert "valid integer" in bad_number.text


async def test_policy_versions_and_their_diff(demo_api: ApiServer) -> None:
    api = demo_api
    await refund_waiting(api)
    changed = POLICY_FILE.read_text(encoding="utf-8").replace("limit: 2.00", "limit: 3.00")
    await apply_policy(
        api.store, "default", changed, source="support.yaml", actor="human:ada", now=2e9
    )
    token = await api.key("viewer")
    async with browser(api, token) as client:
        page = (await client.get("/policies/support")).text
        assert "Changes from v1 to v2" in page
        assert '<span class="d-add">+    limit: 3.00</span>' in page
        assert '<span class="d-del">-    limit: 2.00</span>' in page
        same = (await client.get("/policies/support", params={"a": 2, "b": 2})).text
        assert "are the same text" in same
        first = (await client.get("/policies/support", params={"b": 1})).text
        assert "v1 is the first version" in first


async def test_runs_page_by_cursor(api: ApiServer) -> None:
    operator = await api.key("operator")
    async with api.client(operator) as http:
        for number in range(27):
            api.clock.advance(1)
            started = await http.post(
                "/api/v1/runs", json={"workflow": "greet", "input": str(number)}
            )
            assert started.status_code == 201
    token = await api.key("viewer")
    async with browser(api, token) as client:
        first = (await client.get("/runs", params={"workflow": "greet"})).text
        assert first.count('data-status="pending"') == 25
        older = re.search(r'href="(/runs\?[^"]*cursor=[^"]+)" rel="next"', first)
        assert older is not None
        second = (await client.get(older.group(1).replace("&amp;", "&"))).text
        assert second.count('data-status="pending"') == 2
        assert "« Newest" in second


async def test_static_files_are_the_uis_own(api: ApiServer) -> None:
    async with api.client() as client:
        css = await client.get("/ui/static/corral.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        js = await client.get("/ui/static/live.js")
        assert js.headers["content-type"].startswith("text/javascript")
        assert "/api/v1/events" in js.text
        for name in ("missing.js", "..%2Fpages.py", "pages.py"):
            assert (await client.get(f"/ui/static/{name}")).status_code == 404, name
