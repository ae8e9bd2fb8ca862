"""`corral run`: starting runs, --wait outcomes and exit codes, input handling (in-process)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke


def test_run_prints_only_the_run_id_on_stdout_and_leaves_it_pending(cli: Invoke) -> None:
    started = cli("run", "greet", "--input", '{"name": "Ada"}').no_traceback()
    assert started.exit_code == 0
    run_id = started.stdout.strip()
    assert len(run_id) == 36
    assert "\n" not in run_id
    assert f"started run {run_id} of greet@1" in started.stderr
    assert "corral worker" in started.stderr

    shown = cli("runs", "show", run_id, "--json")
    assert shown.json()["status"] == "pending"
    assert shown.json()["input"] == {"name": "Ada", "times": 1}


def test_run_wait_succeeds_with_exit_0_and_prints_the_result(cli: Invoke) -> None:
    done = cli("run", "greet", "--input", '{"name": "Ada", "times": 2}', "--wait")
    assert done.exit_code == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[1] == "status: succeeded"
    assert json.loads(done.stdout.split("result: ", 1)[1]) == {"greeting": "hello Ada hello Ada"}


def test_run_wait_json_has_the_outcome(cli: Invoke) -> None:
    done = cli("run", "greet", "--input", '{"name": "Bo"}', "--wait", "--json")
    assert done.exit_code == 0
    body = done.json()
    assert body["status"] == "succeeded"
    assert body["result"] == {"greeting": "hello Bo"}
    assert body["created"] is True


def test_run_wait_of_a_failing_run_exits_1_with_the_error(cli: Invoke) -> None:
    done = cli("run", "boom", "--input", '"on purpose"', "--wait").no_traceback()
    assert done.exit_code == 1
    assert "status: failed" in done.stdout
    assert "ValueError: kaboom: on purpose" in done.stdout
    assert "--traceback" in done.stderr


def test_run_wait_of_a_run_waiting_for_a_signal_exits_4_and_says_how_to_resume(
    cli: Invoke,
) -> None:
    parked = cli("run", "approval", "--input", "{}", "--wait").no_traceback()
    assert parked.exit_code == 4
    run_id = parked.stdout.splitlines()[0]
    assert "status: waiting" in parked.stdout
    assert "signal 'approve'" in parked.stderr
    assert f"corral signal {run_id} approve" in parked.stderr


def test_run_wait_of_a_run_on_a_long_timer_exits_4(cli: Invoke) -> None:
    parked = cli("run", "nap", "--input", "3600", "--wait")
    assert parked.exit_code == 4
    assert "a timer, until" in parked.stderr


def test_run_with_timeout_waits_through_a_short_timer(cli: Invoke) -> None:
    # The durable timer is real time here: 0.1s, well inside the 30s deadline.
    done = cli("run", "nap", "--input", "0.1", "--timeout", "30")
    assert done.exit_code == 0, done.stderr
    assert 'result: "rested"' in done.stdout


def test_run_with_timeout_gives_up_on_a_signal_that_never_comes(cli: Invoke) -> None:
    parked = cli("run", "approval", "--input", "{}", "--wait", "--timeout", "0.3")
    assert parked.exit_code == 4
    assert "not finished after --timeout 0.3s" in parked.stderr


def test_run_with_a_child_run_waits_for_the_child(cli: Invoke) -> None:
    done = cli("run", "parent", "--input", '"bo"', "--wait")
    assert done.exit_code == 0, done.stderr
    assert 'result: "HELLO BO HELLO BO"' in done.stdout


def test_a_str_input_reaches_the_workflow_as_a_str(cli: Invoke) -> None:
    # The engine reads a `str` input as JSON text; the CLI hands it JSON bytes, so a JSON
    # string given on the command line arrives as that string.
    done = cli("run", "boom", "--input", '"plain words"', "--wait", "--json")
    assert done.json()["input"] == "plain words"


def test_an_idempotency_key_returns_the_earlier_run(cli: Invoke) -> None:
    first = cli("run", "greet", "--input", '{"name": "A"}', "--idempotency-key", "k-1")
    again = cli("run", "greet", "--input", '{"name": "A"}', "--idempotency-key", "k-1")
    assert again.exit_code == 0
    assert again.stdout == first.stdout
    assert "existing run" in again.stderr
    assert "'k-1'" in again.stderr
    body = cli("run", "greet", "-i", '{"name": "A"}', "--idempotency-key", "k-1", "--json").json()
    assert body["created"] is False
    assert body["idempotency_key"] == "k-1"


def test_input_from_a_file_and_from_stdin(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "input.json"
    path.write_text('{"name": "File"}', encoding="utf-8")
    from_file = cli("run", "greet", "--input-file", str(path), "--wait", "--json")
    assert from_file.json()["result"] == {"greeting": "hello File"}
    from_stdin = cli(
        "run", "greet", "--input-file", "-", "--wait", "--json", stdin='{"name": "In"}'
    )
    assert from_stdin.json()["result"] == {"greeting": "hello In"}


def test_malformed_input_json_says_where_and_starts_nothing(cli: Invoke) -> None:
    bad = cli("run", "greet", "--input", '{"name": "Ada",}').no_traceback()
    assert bad.exit_code == 2
    assert bad.stdout == ""
    assert "--input is not valid JSON" in bad.stderr
    assert "line 1 column 16" in bad.stderr
    assert cli("runs", "list", "--json").json() == {"runs": []}


def test_malformed_input_file_names_the_file(cli: Invoke, tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "name": \n}', encoding="utf-8")
    bad = cli("run", "greet", "--input-file", str(path)).no_traceback()
    assert bad.exit_code == 2
    assert "broken.json" in bad.stderr
    assert "line 3 column 1" in bad.stderr


def test_a_missing_input_file_is_a_usage_error(cli: Invoke, tmp_path: Path) -> None:
    bad = cli("run", "greet", "--input-file", str(tmp_path / "nope.json")).no_traceback()
    assert bad.exit_code == 2
    assert "cannot read --input-file" in bad.stderr
    assert "nope.json" in bad.stderr


def test_input_and_input_file_together_are_refused(cli: Invoke, tmp_path: Path) -> None:
    bad = cli("run", "greet", "--input", "{}", "--input-file", str(tmp_path / "x.json"))
    assert bad.exit_code == 2
    assert "not both" in bad.stderr


def test_input_failing_its_schema_names_the_field(cli: Invoke) -> None:
    bad = cli("run", "greet", "--input", '{"name": "Ada", "times": "often"}').no_traceback()
    assert bad.exit_code == 2
    assert "error (invalid_input)" in bad.stderr
    assert "times: Input should be a valid integer" in bad.stderr
    assert "GreetIn" in bad.stderr
    assert cli("runs", "list", "--json").json() == {"runs": []}


def test_a_missing_required_input_is_a_schema_error(cli: Invoke) -> None:
    bad = cli("run", "greet").no_traceback()
    assert bad.exit_code == 2
    assert "GreetIn" in bad.stderr
    assert "--input" in bad.stderr


def test_an_unknown_workflow_lists_the_known_ones(cli: Invoke) -> None:
    bad = cli("run", "no_such_flow").no_traceback()
    assert bad.exit_code == 2
    assert "error (unknown_workflow)" in bad.stderr
    assert "'no_such_flow'" in bad.stderr
    assert "approval, boom, count, flaky, greet, nap, parent, reserve, wire" in bad.stderr


def test_an_unimportable_reference_says_which_module(cli: Invoke) -> None:
    bad = cli("run", "no_such_module_xyz:flow").no_traceback()
    assert bad.exit_code == 2
    assert "cannot import module 'no_such_module_xyz'" in bad.stderr


def test_a_module_function_reference_runs_without_registration(cli: Invoke) -> None:
    done = cli(
        "run",
        "tests.cli.sample_app:greet",
        "--input",
        '{"name": "Ref"}',
        "--wait",
        "--json",
        env={"CORRAL_APP": "tests.cli.sample_app:pair"},
    )
    assert done.exit_code == 0, done.stderr
    assert done.json()["workflow"] == "tests.cli.sample_app:greet"
    assert done.json()["result"] == {"greeting": "hello Ref"}


def test_a_reference_to_a_module_in_the_current_directory(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "localflows_cli_test.py").write_text(
        "from corral import RunContext\n\n"
        "async def double(ctx: RunContext, n: int) -> int:\n"
        "    return 2 * n\n",
        encoding="utf-8",
    )
    done = cli("run", "localflows_cli_test:double", "--input", "21", "--wait", "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["result"] == 42


def test_the_default_database_is_under_dot_corral(cli: Invoke, tmp_path: Path) -> None:
    done = cli("run", "greet", "--input", '{"name": "D"}', env={"CORRAL_DATABASE_URL": None})
    assert done.exit_code == 0, done.stderr
    assert (tmp_path / ".corral" / "corral.db").is_file()
