"""`corral principals …` and the kill switches `corral pause|resume …`, end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

AGENT = "tests.cli.agent_app:adder"


def test_the_first_principal_bootstraps_then_only_admins_add(cli: Invoke) -> None:
    assert cli("--as", "ada", "principals", "add", "ada", "--role", "admin").exit_code == 0
    added = cli(
        "--as", "ada", "principals", "add", "sam", "--role", "approver", "--group", "finance"
    ).no_traceback()
    assert added.exit_code == 0, added.stderr
    assert "roles approver; groups finance" in added.stdout
    refused = cli("--as", "sam", "principals", "add", "eve", "--role", "admin").no_traceback()
    assert refused.exit_code == 2
    assert "cannot add principals: that needs the admin role" in refused.stderr
    stranger = cli("--as", "mallory", "principals", "add", "eve", "--role", "admin")
    assert stranger.exit_code == 2
    assert "'mallory' is not a principal" in stranger.stderr
    listed = cli("principals", "list", "--json").json()["principals"]
    assert [(p["name"], p["roles"], p["groups"]) for p in listed] == [
        ("ada", ["admin"], []),
        ("sam", ["approver"], ["finance"]),
    ]
    audit = cli("--as", "ada", "audit", "list", "--json").json()["entries"]
    assert [e["kind"] for e in audit] == ["principal.saved", "principal.saved"]


def test_bad_roles_and_kinds_are_refused(cli: Invoke) -> None:
    bad = cli("principals", "add", "bob", "--role", "wizard").no_traceback()
    assert bad.exit_code == 2
    assert "unknown role 'wizard': roles are viewer, operator, approver, admin" in bad.stderr
    assert cli("principals", "add", "bob", "--role", "viewer", "--kind", "robot").exit_code == 2
    assert cli("principals", "list", "--json").json() == {"principals": []}


def test_a_paused_agent_stops_its_run_and_resume_lets_new_runs_go(cli: Invoke) -> None:
    assert cli("--as", "ops", "principals", "add", "ops", "--role", "operator").exit_code == 0
    viewer = cli("--as", "ops", "principals", "add", "vic", "--role", "viewer")
    assert viewer.exit_code == 2  # an operator is not an admin
    paused = cli("--as", "ops", "pause", "agent", "adder", "--reason", "incident 7")
    assert paused.exit_code == 0, paused.stderr
    assert "no tool call of it starts now" in paused.stdout
    assert "agent:adder: paused by human:ops (incident 7)" in cli("pause", "list").stdout

    stopped = cli("run", AGENT, "-i", "add", "--wait", "--json").json()
    assert stopped["status"] == "failed"
    assert stopped["error"]["code"] == "paused"
    assert "incident 7" in stopped["error"]["message"]

    assert cli("--as", "ops", "resume", "agent", "adder").exit_code == 0
    assert cli("pause", "list").stdout.strip() == "nothing is paused"
    again = cli("run", AGENT, "-i", "add", "--wait", "--json").json()
    assert again["status"] == "succeeded"
    assert again["result"] == "The sum is 5."
    kinds = [e["kind"] for e in cli("--as", "ops", "audit", "list", "--json").json()["entries"]]
    assert kinds[:2] == ["pause.cleared", "pause.set"]


def test_pausing_needs_the_operator_role(cli: Invoke) -> None:
    assert cli("--as", "ada", "principals", "add", "ada", "--role", "admin").exit_code == 0
    assert cli("--as", "ada", "principals", "add", "vic", "--role", "viewer").exit_code == 0
    refused = cli("--as", "vic", "pause", "tenant", "--reason", "x").no_traceback()
    assert refused.exit_code == 2
    assert "needs the operator role" in refused.stderr
    assert cli("--as", "ada", "pause", "tenant", "--reason", "drill").exit_code == 0
    assert "tenant: paused by human:ada (drill)" in cli("pause", "list").stdout
