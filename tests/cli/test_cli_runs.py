"""`corral runs list|show|cancel` and `corral signal`, in-process."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke


def start(cli: Invoke, *args: str) -> str:
    started = cli("run", *args)
    assert started.exit_code in (0, 1, 4), started.stderr
    return started.stdout.splitlines()[0]


def test_list_shows_a_table_of_runs_newest_first(cli: Invoke) -> None:
    first = start(cli, "greet", "-i", '{"name": "a"}', "--wait")
    second = start(cli, "approval", "-i", "{}", "--wait")
    listed = cli("runs", "list").no_traceback()
    assert listed.exit_code == 0
    lines = listed.stdout.splitlines()
    header = next(line for line in lines if "run id" in line)
    for column in ("workflow", "status", "created", "updated"):
        assert column in header
    rows = [line for line in lines if first in line or second in line]
    assert second in rows[0]
    assert "approval@1" in rows[0]
    assert "waiting" in rows[0]
    assert first in rows[1]
    assert "greet@1" in rows[1]
    assert "succeeded" in rows[1]


def test_list_filters_by_status_and_workflow_and_limits(cli: Invoke) -> None:
    done = start(cli, "greet", "-i", '{"name": "a"}', "--wait")
    waiting = start(cli, "approval", "-i", "{}", "--wait")
    start(cli, "greet", "-i", '{"name": "b"}')

    def ids(*args: str) -> list[str]:
        return [run["run_id"] for run in cli("runs", "list", "--json", *args).json()["runs"]]

    assert ids("--status", "waiting") == [waiting]
    assert ids("--status", "succeeded") == [done]
    assert len(ids("--workflow", "greet")) == 2
    assert len(ids("--limit", "1")) == 1
    assert ids("--workflow", "nothing") == []


def test_list_of_an_empty_database_says_so_on_stderr(cli: Invoke, db_url: str) -> None:
    empty = cli("runs", "list")
    assert empty.exit_code == 0
    assert empty.stdout == ""
    assert f"no runs of tenant 'default' in {db_url}" in empty.stderr


def test_an_unknown_status_lists_the_valid_ones(cli: Invoke) -> None:
    bad = cli("runs", "list", "--status", "done").no_traceback()
    assert bad.exit_code == 2
    text = " ".join(bad.stderr.split())
    assert "unknown status 'done'" in text
    assert "pending, running, waiting, succeeded, failed, cancelled, needs_reconciliation" in (
        text.replace("│ ", "").replace(" │", "")
    )


def test_show_prints_the_run_and_its_journal(cli: Invoke) -> None:
    run_id = start(cli, "greet", "-i", '{"name": "Ada"}', "--wait")
    shown = cli("runs", "show", run_id).no_traceback()
    assert shown.exit_code == 0
    out = shown.stdout
    assert run_id in out
    assert "greet@1" in out
    assert "succeeded" in out
    assert '{"name":"Ada","times":1}' in out
    assert '{"greeting":"hello Ada"}' in out
    journal = out.split("journal", 1)[1]
    assert "make_greeting" in journal
    assert "step" in journal


def test_show_of_a_failed_run_prints_the_error_and_the_traceback_only_on_request(
    cli: Invoke,
) -> None:
    run_id = start(cli, "boom", "-i", '"why not"', "--wait")
    plain = cli("runs", "show", run_id)
    assert plain.exit_code == 0
    assert "StepFailed" in plain.stdout
    assert "ValueError: kaboom: why not" in plain.stdout
    assert "Traceback" not in plain.stdout
    detailed = cli("runs", "show", run_id, "--traceback")
    assert "traceback of step 1 (explode)" in detailed.stdout
    assert "Traceback (most recent call last)" in detailed.stdout
    assert "sample_app.py" in detailed.stdout


def test_show_shortens_long_results_in_the_journal_table(cli: Invoke) -> None:
    run_id = start(cli, "greet", "-i", '{"name": "Ada", "times": 40}', "--wait")
    shown = cli("runs", "show", run_id).stdout
    journal = shown.split("journal", 1)[1]
    assert "…" in journal
    full = cli("runs", "show", run_id, "--json").json()
    assert full["steps"][0]["result"] == " ".join(["hello Ada"] * 40)


def test_show_links_parent_and_child_runs(cli: Invoke) -> None:
    parent_id = start(cli, "parent", "-i", '"kid"', "--wait")
    detail = cli("runs", "show", parent_id, "--json").json()
    [child] = detail["children"]
    assert child["workflow"] == "greet"
    assert child["status"] == "succeeded"
    assert cli("runs", "show", parent_id).stdout.count(child["run_id"]) >= 1
    child_view = cli("runs", "show", child["run_id"])
    assert f"{parent_id} (its step 1)" in child_view.stdout


def test_show_of_a_waiting_run_says_what_it_waits_for(cli: Invoke) -> None:
    run_id = start(cli, "approval", "-i", "{}", "--wait")
    shown = cli("runs", "show", run_id).stdout
    assert "waiting for" in shown
    assert "signal 'approve'" in shown


def test_show_of_an_unknown_run_exits_2(cli: Invoke, db_url: str) -> None:
    missing = cli("runs", "show", "no-such-run").no_traceback()
    assert missing.exit_code == 2
    assert "error (run_not_found)" in missing.stderr
    assert "'no-such-run'" in missing.stderr
    assert db_url in missing.stderr


def test_signal_then_worker_resumes_the_run(cli: Invoke) -> None:
    run_id = start(cli, "approval", "-i", '{"order": 7}', "--wait")
    sent = cli("signal", run_id, "approve", "--data", '{"ok": true}').no_traceback()
    assert sent.exit_code == 0
    assert f"sent signal 'approve' to run {run_id}" in sent.stdout
    pending = cli("runs", "show", run_id, "--json").json()["signals"]
    assert [(s["name"], s["data"], s["consumed_seq"]) for s in pending] == [
        ("approve", {"ok": True}, None)
    ]
    assert cli("worker", "--until-idle").exit_code == 0
    detail = cli("runs", "show", run_id, "--json").json()
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"request": {"order": 7}, "decision": {"ok": True}}
    assert detail["signals"][0]["consumed_seq"] == 1


def test_signal_with_malformed_data_sends_nothing(cli: Invoke) -> None:
    run_id = start(cli, "approval", "-i", "{}", "--wait")
    bad = cli("signal", run_id, "approve", "--data", "{ok}").no_traceback()
    assert bad.exit_code == 2
    assert "--data is not valid JSON" in bad.stderr
    assert cli("runs", "show", run_id, "--json").json()["signals"] == []


def test_signal_to_a_finished_run_is_refused(cli: Invoke) -> None:
    run_id = start(cli, "greet", "-i", '{"name": "a"}', "--wait")
    late = cli("signal", run_id, "approve").no_traceback()
    assert late.exit_code == 2
    assert "error (run_finished)" in late.stderr
    assert "already succeeded" in late.stderr
    assert "not delivered" in late.stderr
    assert cli("runs", "show", run_id, "--json").json()["signals"] == []


def test_signal_to_an_unknown_run_exits_2(cli: Invoke) -> None:
    missing = cli("signal", "no-such-run", "approve").no_traceback()
    assert missing.exit_code == 2
    assert "error (run_not_found)" in missing.stderr


def test_cancel_a_waiting_run_and_cancel_it_again(cli: Invoke) -> None:
    run_id = start(cli, "approval", "-i", "{}", "--wait")
    cancelled = cli("runs", "cancel", run_id)
    assert cancelled.exit_code == 0
    assert cancelled.stdout.strip() == f"cancelled run {run_id}"
    detail = cli("runs", "show", run_id, "--json").json()
    assert detail["status"] == "cancelled"
    assert detail["error"]["code"] == "cancelled"
    again = cli("runs", "cancel", run_id, "--json")
    assert again.exit_code == 0
    assert again.json()["status"] == "cancelled"


def test_cancel_of_a_finished_run_exits_2(cli: Invoke) -> None:
    run_id = start(cli, "greet", "-i", '{"name": "a"}', "--wait")
    refused = cli("runs", "cancel", run_id).no_traceback()
    assert refused.exit_code == 2
    assert "already succeeded" in refused.stderr
    assert cli("runs", "show", run_id, "--json").json()["status"] == "succeeded"


def test_cancel_of_an_unknown_run_exits_2(cli: Invoke) -> None:
    assert cli("runs", "cancel", "no-such-run").exit_code == 2


def test_a_cancelled_pending_run_is_not_executed_by_a_worker(cli: Invoke) -> None:
    run_id = start(cli, "greet", "-i", '{"name": "a"}')
    assert cli("runs", "cancel", run_id).exit_code == 0
    worker = cli("worker", "--until-idle")
    assert "claimed 0 run(s)" in worker.stderr
    assert cli("runs", "show", run_id, "--json").json()["steps"] == []


def test_cancelling_a_run_with_compensations_sends_it_a_cancel(cli: Invoke) -> None:
    run_id = start(cli, "reserve", "-i", '"mug"', "--wait")
    cancelled = cli("runs", "cancel", run_id).no_traceback()
    assert cancelled.exit_code == 0
    assert "makes its compensations first" in cancelled.stdout
    assert cli("worker", "--until-idle").exit_code == 0
    shown = cli("runs", "show", run_id, "--json").json()
    assert shown["status"] == "cancelled"
    assert [step["name"] for step in shown["steps"]][-1] == "compensate:reserve_stock"


def test_show_counts_a_retried_steps_attempts(cli: Invoke) -> None:
    run_id = start(cli, "flaky", "-i", '"A-1"', "--wait")
    assert cli("worker", "--until-idle").exit_code == 0
    shown = cli("runs", "show", run_id).no_traceback()
    assert "succeeded" in shown.stdout
    assert "lookup (2 attempts)" in " ".join(shown.stdout.split())
