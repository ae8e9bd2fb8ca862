"""The webhooks API over HTTP: admins subscribe URLs (the secret is answered once), list and
remove them, send a test event and follow its deliveries by cursor; other roles are refused
and other tenants' webhooks answer like missing ones; bad URLs and event types get problems."""

from __future__ import annotations

import json
from typing import get_args

import httpx2
import pytest

from corral.control.dispatcher import dispatch_once, verify_signature
from corral.control.events import NOTIFICATION_TYPES
from corral.governance.audit import read_entries
from corral.server.routes.webhooks import NotificationType

from .harness import ApiServer

pytestmark = pytest.mark.timeout(60)

HOOK = {"url": "https://chat.example.com/hooks/corral", "events": ["approval.requested"]}


async def test_admins_subscribe_list_and_remove_webhooks(api: ApiServer) -> None:
    admin = await api.key("admin", principal="ada")
    async with api.client(admin) as http:
        made = await http.post("/api/v1/webhooks", json=HOOK | {"description": "#approvals"})
        assert made.status_code == 201, made.text
        webhook = made.json()
        assert webhook["secret"].startswith("whsec_")
        assert webhook["events"] == ["approval.requested"]
        assert (webhook["active"], webhook["created_by"]) == (True, "ada")
        webhook_id = webhook["webhook_id"]

        listed = (await http.get("/api/v1/webhooks")).json()
        assert [w["webhook_id"] for w in listed] == [webhook_id]
        assert "secret" not in listed[0]
        one = await http.get(f"/api/v1/webhooks/{webhook_id}")
        assert one.json() == listed[0]

        removed = await http.delete(f"/api/v1/webhooks/{webhook_id}")
        assert (removed.status_code, removed.json()["webhook_id"]) == (200, webhook_id)
        assert (await http.get(f"/api/v1/webhooks/{webhook_id}")).status_code == 404
        assert (await http.delete(f"/api/v1/webhooks/{webhook_id}")).status_code == 404
        assert (await http.get("/api/v1/webhooks")).json() == []


async def test_bad_subscriptions_get_clear_problems(api: ApiServer) -> None:
    admin = await api.key("admin")
    async with api.client(admin) as http:
        ftp = await http.post("/api/v1/webhooks", json=HOOK | {"url": "ftp://files.example.com"})
        assert (ftp.status_code, ftp.json()["code"]) == (422, "invalid_input")
        assert "must start with http:// or https://" in ftp.json()["detail"]
        unknown = await http.post("/api/v1/webhooks", json=HOOK | {"events": ["run.exploded"]})
        assert (unknown.status_code, unknown.json()["code"]) == (422, "invalid_request")
        assert unknown.json()["errors"][0]["loc"] == ["body", "events", 0]
        none = await http.post("/api/v1/webhooks", json=HOOK | {"events": []})
        assert none.status_code == 422
        extra = await http.post("/api/v1/webhooks", json=HOOK | {"secret": "mine"})
        assert extra.status_code == 422
        malformed = await http.post(
            "/api/v1/webhooks", content=b"{", headers={"content-type": "application/json"}
        )
        assert (malformed.status_code, malformed.json()["code"]) == (400, "malformed_json")


async def test_webhooks_need_the_admin_role_and_stay_in_the_tenant(api: ApiServer) -> None:
    ours, theirs = await api.key("admin"), await api.key("admin", tenant="acme")
    operator = await api.key("operator")
    async with api.client(ours) as http, api.client(theirs) as other:
        webhook_id = (await http.post("/api/v1/webhooks", json=HOOK)).json()["webhook_id"]
        for method, path in [
            ("GET", f"/api/v1/webhooks/{webhook_id}"),
            ("DELETE", f"/api/v1/webhooks/{webhook_id}"),
            ("GET", f"/api/v1/webhooks/{webhook_id}/deliveries"),
            ("POST", f"/api/v1/webhooks/{webhook_id}/test"),
        ]:
            foreign = await other.request(method, path)
            missing = await other.request(method, path.replace(webhook_id, "wh_nosuchhook"))
            assert foreign.status_code == missing.status_code == 404, path
            assert foreign.json()["detail"] == missing.json()["detail"]
        assert (await other.get("/api/v1/webhooks")).json() == []
    async with api.client(operator) as http:
        refused = await http.get("/api/v1/webhooks")
        assert (refused.status_code, refused.json()["code"]) == (403, "forbidden")
        refused = await http.post("/api/v1/webhooks", json=HOOK)
        assert refused.status_code == 403


async def test_a_test_event_is_delivered_and_its_deliveries_page_by_cursor(
    api: ApiServer,
) -> None:
    admin = await api.key("admin", principal="ada")
    async with api.client(admin) as http:
        made = (await http.post("/api/v1/webhooks", json=HOOK)).json()
        webhook_id, secret = made["webhook_id"], made["secret"]
        queued = [await http.post(f"/api/v1/webhooks/{webhook_id}/test") for _ in range(3)]
        assert {answer.status_code for answer in queued} == {202}
        first = queued[0].json()
        assert (first["status"], first["attempts"], first["event_type"]) == (
            "pending",
            0,
            "webhook.test",
        )
        assert first["event"]["data"]["requested_by"] == "ada"

        received: list[httpx2.Request] = []

        def receiver(request: httpx2.Request) -> httpx2.Response:
            received.append(request)
            return httpx2.Response(204)

        async with httpx2.AsyncClient(transport=httpx2.MockTransport(receiver)) as client:
            report = await dispatch_once(api.store, api.clock, client)
        assert report.delivered == 3
        for request in received:
            assert str(request.url) == HOOK["url"]
            signature = request.headers["corral-signature"]
            assert verify_signature(secret, signature, request.content, now=api.clock.now())
            assert json.loads(request.content)["type"] == "webhook.test"

        seen: list[str] = []
        cursor = None
        while True:
            params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            page = await http.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params=params)
            assert page.status_code == 200, page.text
            for delivery in page.json()["items"]:
                assert delivery["status"] == "delivered"
                assert [a["status_code"] for a in delivery["attempt_log"]] == [204]
                seen.append(delivery["delivery_id"])
            cursor = page.json()["next_cursor"]
            if cursor is None:
                break
        assert sorted(seen) == sorted(answer.json()["delivery_id"] for answer in queued)

        dead = await http.get(
            f"/api/v1/webhooks/{webhook_id}/deliveries", params={"status": "dead"}
        )
        assert dead.json() == {"items": [], "next_cursor": None}
        bad = await http.get(f"/api/v1/webhooks/{webhook_id}/deliveries", params={"status": "lost"})
        assert bad.status_code == 422


def test_the_api_offers_every_notification_type() -> None:
    assert get_args(NotificationType) == NOTIFICATION_TYPES


async def test_a_paused_webhook_holds_its_deliveries_until_it_is_resumed(api: ApiServer) -> None:
    admin = await api.key("admin", principal="ada")
    received: list[httpx2.Request] = []

    def receiver(request: httpx2.Request) -> httpx2.Response:
        received.append(request)
        return httpx2.Response(204)

    async with (
        api.client(admin) as http,
        httpx2.AsyncClient(transport=httpx2.MockTransport(receiver)) as client,
    ):
        webhook_id = (await http.post("/api/v1/webhooks", json=HOOK)).json()["webhook_id"]
        delivery = (await http.post(f"/api/v1/webhooks/{webhook_id}/test")).json()
        paused = await http.patch(f"/api/v1/webhooks/{webhook_id}", json={"active": False})
        assert (paused.status_code, paused.json()["active"]) == (200, False), paused.text
        assert (await dispatch_once(api.store, api.clock, client)).delivered == 0
        assert received == []
        again = await http.patch(f"/api/v1/webhooks/{webhook_id}", json={"active": False})
        assert again.json()["active"] is False  # no change, nothing audited

        resumed = await http.patch(f"/api/v1/webhooks/{webhook_id}", json={"active": True})
        assert resumed.json()["active"] is True
        assert (await dispatch_once(api.store, api.clock, client)).delivered == 1
        assert [json.loads(r.content)["id"] for r in received] == [delivery["event_id"]]

        entries = await api.store.read_script(lambda d: read_entries("default"))
        kinds = [e.kind for e in entries if e.subject == f"webhook:{webhook_id}"]
        assert sorted(kinds) == ["webhook.created", "webhook.paused", "webhook.resumed"]

        bad = await http.patch(f"/api/v1/webhooks/{webhook_id}", json={"active": "maybe"})
        assert (bad.status_code, bad.json()["errors"][0]["loc"]) == (422, ["body", "active"])
        missing = await http.patch("/api/v1/webhooks/wh_nosuchhook", json={"active": True})
        assert missing.status_code == 404
