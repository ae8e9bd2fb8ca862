"""The `--json` shapes are a promise to scripts: exact key sets, decoded payloads, ISO times.

Changing a set here is a decision: update docs/cli.md with it.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

RUN_KEYS = {
    "run_id",
    "workflow",
    "workflow_version",
    "status",
    "tenant",
    "input",
    "result",
    "error",
    "idempotency_key",
    "parent_run_id",
    "parent_step_seq",
    "created_at",
    "updated_at",
    "wake_at",
    "lease_owner",
    "lease_expires_at",
    "lease_epoch",
    "claims",
}
STEP_KEYS = {
    "seq",
    "kind",
    "name",
    "status",
    "idempotency_key",
    "at_most_once",
    "result",
    "error",
    "detail",
    "started_at",
    "finished_at",
}
CHILD_KEYS = {"run_id", "workflow", "status", "parent_step_seq"}
SIGNAL_KEYS = {"signal_id", "run_id", "name", "data", "created_at", "consumed_seq"}
WORKFLOW_KEYS = {"name", "version", "input_type", "output_type"}
ERROR_KEYS = {"code", "type", "message", "module", "traceback"}

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def assert_iso(value: Any) -> None:
    assert isinstance(value, str)
    assert ISO_UTC.match(value), value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.utcoffset() == dt.timedelta(0)


def test_run_json_is_the_run_shape_plus_created(cli: Invoke) -> None:
    body = cli("run", "greet", "-i", '{"name": "J"}', "--idempotency-key", "j", "--json").json()
    assert set(body) == RUN_KEYS | {"created"}
    assert body["status"] == "pending"
    assert body["input"] == {"name": "J", "times": 1}  # decoded, with defaults applied
    assert body["result"] is None
    assert body["error"] is None
    assert body["idempotency_key"] == "j"
    assert body["tenant"] == "default"
    assert_iso(body["created_at"])
    assert_iso(body["updated_at"])
    assert body["wake_at"] is None
    assert body["lease_owner"] is None
    assert body["lease_epoch"] == 0
    assert body["claims"] == 0


def test_runs_list_json_is_an_object_with_runs(cli: Invoke) -> None:
    cli("run", "greet", "-i", '{"name": "J"}')
    body = cli("runs", "list", "--json").json()
    assert set(body) == {"runs"}
    [run] = body["runs"]
    assert set(run) == RUN_KEYS


def test_runs_show_json_of_a_succeeded_run(cli: Invoke) -> None:
    run_id = cli("run", "greet", "-i", '{"name": "J"}', "--wait").stdout.splitlines()[0]
    body = cli("runs", "show", run_id, "--json").json()
    assert set(body) == RUN_KEYS | {"steps", "children", "signals"}
    assert body["result"] == {"greeting": "hello J"}
    [step] = body["steps"]
    assert set(step) == STEP_KEYS
    assert step == {
        "seq": 1,
        "kind": "step",
        "name": "make_greeting",
        "status": "succeeded",
        "idempotency_key": f"{run_id}:1",
        "at_most_once": False,
        "result": "hello J",
        "error": None,
        "detail": None,
        "started_at": step["started_at"],
        "finished_at": step["finished_at"],
    }
    assert_iso(step["started_at"])
    assert_iso(step["finished_at"])
    assert body["children"] == []
    assert body["signals"] == []


def test_runs_show_json_of_a_failed_run_has_the_complete_error(cli: Invoke) -> None:
    run_id = cli("run", "boom", "-i", '"x"', "--wait").stdout.splitlines()[0]
    body = cli("runs", "show", run_id, "--json").json()
    assert body["status"] == "failed"
    assert set(body["error"]) >= ERROR_KEYS
    assert body["error"]["code"] == "step_failed"
    [step] = body["steps"]
    assert step["status"] == "failed"
    assert step["error"]["type"] == "ValueError"
    assert step["error"]["message"] == "kaboom: x"
    assert "Traceback" in step["error"]["traceback"]


def test_runs_show_json_of_a_waiting_run_with_children_and_signals(cli: Invoke) -> None:
    waiting = cli("run", "approval", "-i", "{}", "--wait").stdout.splitlines()[0]
    cli("signal", waiting, "other", "--data", "[1, 2]")
    body = cli("runs", "show", waiting, "--json").json()
    [step] = body["steps"]
    assert step["kind"] == "signal"
    assert step["status"] == "started"
    assert step["detail"] == {"timeout": None, "deadline": None}
    assert step["finished_at"] is None
    [signal] = body["signals"]
    assert set(signal) == SIGNAL_KEYS
    assert signal["data"] == [1, 2]
    assert signal["consumed_seq"] is None
    assert_iso(signal["created_at"])

    parent = cli("run", "parent", "-i", '"p"', "--wait").stdout.splitlines()[0]
    [child] = cli("runs", "show", parent, "--json").json()["children"]
    assert set(child) == CHILD_KEYS
    assert child["parent_step_seq"] == 1
    child_body = cli("runs", "show", child["run_id"], "--json").json()
    assert child_body["parent_run_id"] == parent
    assert child_body["parent_step_seq"] == 1


def test_a_parked_timer_shows_wake_at(cli: Invoke) -> None:
    body = cli("run", "nap", "-i", "3600", "--wait", "--json").json()
    assert body["status"] == "waiting"
    assert_iso(body["wake_at"])


def test_signal_json_is_the_stored_signal(cli: Invoke) -> None:
    run_id = cli("run", "approval", "-i", "{}", "--wait").stdout.splitlines()[0]
    body = cli("signal", run_id, "approve", "--data", '"yes"', "--json").json()
    assert set(body) == SIGNAL_KEYS
    assert body["run_id"] == run_id
    assert body["name"] == "approve"
    assert body["data"] == "yes"


def test_cancel_json_is_the_run_shape(cli: Invoke) -> None:
    run_id = cli("run", "approval", "-i", "{}").stdout.strip()
    body = cli("runs", "cancel", run_id, "--json").json()
    assert set(body) == RUN_KEYS
    assert body["status"] == "cancelled"


def test_workflows_json(cli: Invoke) -> None:
    body = cli("workflows", "--json").json()
    assert set(body) == {"workflows"}
    by_name = {wf["name"]: wf for wf in body["workflows"]}
    assert all(set(wf) == WORKFLOW_KEYS for wf in body["workflows"])
    assert by_name["greet"] == {
        "name": "greet",
        "version": "1",
        "input_type": "GreetIn",
        "output_type": "GreetOut",
    }
    assert by_name["nap"]["input_type"] == "float"
    assert by_name["approval"]["input_type"] == "dict[str, Any]"


def test_signals_corral_sends_itself_are_refused(cli: Invoke) -> None:
    waiting = cli("run", "approval", "-i", "{}", "--wait").stdout.splitlines()[0]
    for name in ("approval:a1b2", "corral.cancel"):
        refused = cli("signal", waiting, name, "--data", '{"status": "approved"}')
        assert refused.exit_code == 2
        assert "reserved for Corral" in refused.stderr
    assert cli("runs", "show", waiting, "--json").json()["signals"] == []
