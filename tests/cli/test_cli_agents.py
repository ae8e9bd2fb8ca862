"""`corral run` starts an agent as a run of its own, with text as its input."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

AGENT = "tests.cli.agent_app:adder"


def test_an_agent_runs_from_the_command_line_on_text(cli: Invoke) -> None:
    done = cli("run", AGENT, "-i", "what is 2 + 3?", "--wait", "--json").no_traceback()
    assert done.exit_code == 0, done.stderr
    body = done.json()
    assert body["status"] == "succeeded"
    assert body["result"] == "The sum is 5."
    shown = cli("runs", "show", body["run_id"], "--json").json()
    assert [(s["name"], s["status"]) for s in shown["steps"]] == [
        ("model:adder", "succeeded"),
        ("tool:add", "succeeded"),
        ("model:adder", "succeeded"),
    ]


def test_text_input_is_refused_for_a_workflow_that_takes_json(cli: Invoke) -> None:
    bad = cli("run", "greet", "-i", "hello there").no_traceback()
    assert bad.exit_code == 2
    assert "--input is not valid JSON" in bad.stderr


def test_follow_streams_the_agent_on_stderr(cli: Invoke) -> None:
    done = cli("run", AGENT, "-i", "add them", "--follow").no_traceback()
    assert done.exit_code == 0, done.stderr
    assert "adder → add(" in done.stderr
    assert "adder ← add: 5" in done.stderr
    assert "adder: The sum is 5." in done.stderr
    assert "The sum is 5." in done.stdout
