"""Policies over HTTP: apply (admins; a bad document is a 422 naming its line), list, show,
versions, diff, roll back, and test cases; a policy of another tenant is not found."""

from __future__ import annotations

import pytest

from corral.governance.verify import recent_entries
from corral.store.scripts import Script, Statement

from .harness import ApiServer

pytestmark = pytest.mark.timeout(60)

V1 = """name: refunds
description: Refunds over $500 need finance.
rules:
  - name: large-refunds-need-approval
    match: {tools: [issue_refund]}
    when: args.amount_cents > 50000
    effect: require_approval
    approval: {approvers: [finance], deadline: 4h}
  - name: no-deletes
    match: {tools: ["delete_*"]}
    effect: deny
    reason: Agents do not delete.
"""
V2 = V1.replace("50000", "20000").replace("$500", "$200")
BROKEN = V1.replace("effect: deny", "effect: maybe")
"""Invalid at line 11 (the second rule's effect)."""


LEGACY = "name: legacy\nrules: 5\n"


def stored_elsewhere(tenant: str) -> Script[None]:
    """A version written by a Corral whose documents this one does not read."""
    yield Statement(
        "INSERT INTO policies (tenant, name, version, document, digest, created_at, created_by,"
        " restored_from) VALUES (?, 'legacy', 1, ?, 'legacy-digest', 0, 'human:old', NULL)",
        (tenant, LEGACY),
    )


def refund(amount_cents: int, expect: object) -> dict[str, object]:
    return {
        "name": f"refund of {amount_cents}",
        "call": {
            "agent": "refunds",
            "tool": "issue_refund",
            "args": {"amount_cents": amount_cents},
        },
        "expect": expect,
    }


async def test_apply_show_versions_diff_and_roll_back(api: ApiServer) -> None:
    async with api.client(await api.key("admin", principal="ada")) as http:
        first = await http.post("/api/v1/policies", json={"document": V1, "source": "refunds.yaml"})
        assert first.status_code == 201, first.text
        assert first.json() == {
            "name": "refunds",
            "version": 1,
            "changed": True,
            "restored_from": None,
        }
        assert first.headers["location"] == "/api/v1/policies/refunds"
        again = await http.post("/api/v1/policies", json={"document": V1})
        assert (again.status_code, again.json()["changed"]) == (200, False)
        second = await http.post("/api/v1/policies", json={"document": V2})
        assert (second.status_code, second.json()["version"]) == (201, 2)

        listed = (await http.get("/api/v1/policies")).json()
        assert [(p["name"], p["version"], p["versions"]) for p in listed] == [("refunds", 2, 2)]
        assert listed[0]["description"] == "Refunds over $200 need finance."
        assert listed[0]["created_by"] == "human:ada"

        active = (await http.get("/api/v1/policies/refunds")).json()
        assert (active["version"], active["active"], active["document"]) == (2, True, V2)
        assert active["parsed"]["rules"][0]["name"] == "large-refunds-need-approval"
        assert active["parsed"]["rules"][0]["approval"]["deadline"] == 4 * 3600
        old = (await http.get("/api/v1/policies/refunds", params={"version": 1})).json()
        assert (old["version"], old["active"], old["document"]) == (1, False, V1)

        diff = (await http.get("/api/v1/policies/refunds/diff")).json()
        assert (diff["from_version"], diff["to_version"], diff["same"]) == (1, 2, False)
        assert "-    when: args.amount_cents > 50000" in diff["diff"]
        assert "+    when: args.amount_cents > 20000" in diff["diff"]
        same = await http.get("/api/v1/policies/refunds/diff", params={"from": 2, "to": 2})
        assert (same.json()["same"], same.json()["diff"]) == (True, "")

        rolled = await http.post("/api/v1/policies/refunds/rollback", json={"version": 1})
        assert rolled.status_code == 200, rolled.text
        assert rolled.json() == {
            "name": "refunds",
            "version": 3,
            "changed": True,
            "restored_from": 1,
        }
        versions = (await http.get("/api/v1/policies/refunds/versions")).json()
        assert [(v["version"], v["active"], v["restored_from"]) for v in versions] == [
            (1, False, None),
            (2, False, None),
            (3, True, 1),
        ]
        assert (await http.get("/api/v1/policies/refunds")).json()["document"] == V1

    audited = await api.store.read_script(lambda d: recent_entries("default", kind="policy.*"))
    assert [(e.kind, e.actor) for e in audited] == [
        ("policy.rolled_back", "human:ada"),
        ("policy.applied", "human:ada"),
        ("policy.applied", "human:ada"),
    ]


async def test_a_malformed_policy_is_a_422_naming_its_line(api: ApiServer) -> None:
    async with api.client(await api.key("admin")) as http:
        assert (await http.post("/api/v1/policies", json={"document": V1})).status_code == 201
        broken = await http.post("/api/v1/policies", json={"document": BROKEN, "source": "r.yaml"})
        assert broken.status_code == 422
        problem = broken.json()
        assert problem["code"] == "policy_invalid"
        assert problem["detail"].startswith("r.yaml, line 11: rules[1].effect:")
        assert problem["ids"]["line"] == 11
        not_yaml = await http.post("/api/v1/policies", json={"document": "name: [unclosed"})
        assert (not_yaml.status_code, not_yaml.json()["code"]) == (422, "policy_invalid")
        assert "line 1" in not_yaml.json()["detail"]
        for body in ({"document": ""}, {"document": 7}, {}, {"document": V2, "extra": 1}):
            invalid = await http.post("/api/v1/policies", json=body)
            assert (invalid.status_code, invalid.json()["code"]) == (422, "invalid_request")
        # Nothing was written: version 1 stays active.
        versions = (await http.get("/api/v1/policies/refunds/versions")).json()
        assert [v["version"] for v in versions] == [1]

        # A version stored by another Corral that this one cannot parse is still shown.
        await api.store.run_script(lambda d: stored_elsewhere("default"))
        kept = (await http.get("/api/v1/policies/legacy")).json()
        assert (kept["parsed"], kept["document"]) == (None, LEGACY)
        assert "legacy@v1, line 2: rules" in kept["parse_error"]

        bad_version = await http.post("/api/v1/policies/refunds/rollback", json={"version": 0})
        assert bad_version.status_code == 422
        backwards = await http.get("/api/v1/policies/refunds/diff", params={"from": "one"})
        assert backwards.status_code == 422


async def test_changes_need_an_admin_and_other_tenants_policies_are_not_found(
    api: ApiServer,
) -> None:
    async with api.client(await api.key("admin", tenant="acme")) as acme:
        assert (await acme.post("/api/v1/policies", json={"document": V1})).status_code == 201
    for role in ("viewer", "operator", "approver"):
        async with api.client(await api.key(role)) as http:
            refused = await http.post("/api/v1/policies", json={"document": V1})
            assert (refused.status_code, refused.json()["code"]) == (403, "forbidden"), role
            rollback = await http.post("/api/v1/policies/refunds/rollback", json={"version": 1})
            assert rollback.status_code == 403
    async with api.client(await api.key("admin")) as http:
        assert (await http.get("/api/v1/policies")).json() == []
        for path in (
            "/api/v1/policies/{}",
            "/api/v1/policies/{}/versions",
            "/api/v1/policies/{}/diff",
        ):
            theirs = await http.get(path.format("refunds"))
            missing = await http.get(path.format("nothing"))
            assert theirs.status_code == missing.status_code == 404, path
            assert theirs.json()["detail"] == missing.json()["detail"].replace("nothing", "refunds")
        rolled = await http.post("/api/v1/policies/refunds/rollback", json={"version": 1})
        assert rolled.status_code == 404
        await http.post("/api/v1/policies", json={"document": V1})
        no_version = await http.get("/api/v1/policies/refunds", params={"version": 9})
        assert no_version.status_code == 404
        assert "version 9" in no_version.json()["detail"]
        no_rollback = await http.post("/api/v1/policies/refunds/rollback", json={"version": 9})
        assert no_rollback.status_code == 404


async def test_policy_test_cases_run_against_the_tenants_or_given_policies(
    api: ApiServer,
) -> None:
    async with api.client(await api.key("admin")) as admin:
        await admin.post("/api/v1/policies", json={"document": V1})
    cases = [
        refund(60000, "require_approval"),
        refund(100, {"effect": "allow"}),
        refund(30000, {"effect": "require_approval", "rule": "large-refunds-need-approval"}),
        {"name": "deletes", "call": {"tool": "delete_order"}, "expect": "deny"},
    ]
    async with api.client(await api.key("viewer")) as http:
        active = await http.post("/api/v1/policies/test", json={"cases": cases})
        assert active.status_code == 200, active.text
        result = active.json()
        assert (result["passed"], result["failed"]) == (3, 1)
        failing = result["cases"][2]
        assert (failing["passed"], failing["decision"]["effect"]) == (False, "allow")
        assert failing["problems"] == [
            "effect allow (expected require_approval)",
            "rule None (expected large-refunds-need-approval)",
        ]
        assert result["cases"][3]["decision"]["rule"] == "no-deletes"
        assert result["cases"][0]["decision"]["policy"] == "refunds"

        drafted = await http.post("/api/v1/policies/test", json={"cases": cases, "policies": [V2]})
        assert drafted.json()["failed"] == 0  # the draft's threshold is $200

        broken = await http.post(
            "/api/v1/policies/test", json={"cases": cases, "policies": [V1, BROKEN]}
        )
        assert (broken.status_code, broken.json()["code"]) == (422, "policy_invalid")
        assert broken.json()["detail"].startswith("policies[1], line 11")
        bodies: list[dict[str, object]] = [
            {"cases": []},
            {"cases": [{"name": "x", "call": {"tool": "t"}, "expect": "maybe"}]},
            {"cases": [{"name": "x", "call": {}, "expect": "allow"}]},
            {"cases": [{"name": "x", "call": {"tool": "t", "now": 0}, "expect": "allow"}]},
        ]
        for body in bodies:
            invalid = await http.post("/api/v1/policies/test", json=body)
            assert invalid.status_code == 422, body

    async with api.client(await api.key("viewer", tenant="acme")) as other:
        # Acme has no policies: everything is allowed there.
        theirs = (await other.post("/api/v1/policies/test", json={"cases": cases})).json()
        assert [case["decision"]["effect"] for case in theirs["cases"]] == ["allow"] * 4
