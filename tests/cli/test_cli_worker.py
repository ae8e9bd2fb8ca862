"""`corral worker`, in-process: --until-idle, messages on stderr, options."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke


def test_worker_until_idle_executes_pending_runs_and_reports_on_stderr(
    cli: Invoke, db_url: str
) -> None:
    ids = [cli("run", "greet", "-i", f'{{"name": "n{i}"}}').stdout.strip() for i in range(3)]
    parked = cli("run", "approval", "-i", "{}").stdout.strip()
    worked = cli("worker", "--until-idle", "--worker-id", "w-test", "--concurrency", "2")
    assert worked.exit_code == 0, worked.stderr
    assert worked.stdout == ""
    start, *_, summary = worked.stderr.strip().splitlines()
    assert start.startswith(f"worker w-test started on {db_url} (concurrency 2)")
    assert "approval@1, boom@1, count@1, flaky@1, greet@1, nap@1, parent@1, reserve@1" in start
    assert summary == "worker w-test idle: claimed 4 run(s); 3 succeeded, 1 waiting"
    for run_id in ids:
        assert cli("runs", "show", run_id, "--json").json()["status"] == "succeeded"
    assert cli("runs", "show", parked, "--json").json()["status"] == "waiting"


def test_worker_until_idle_with_nothing_to_do(cli: Invoke) -> None:
    worked = cli("worker", "--until-idle")
    assert worked.exit_code == 0
    assert "idle: claimed 0 run(s)" in worked.stderr


def test_worker_leaves_runs_of_unknown_workflows_for_another_worker(cli: Invoke) -> None:
    run_id = cli("run", "boom", "-i", '"x"').stdout.strip()
    worked = cli("worker", "--until-idle", env={"CORRAL_APP": "tests.cli.sample_app:corral"})
    assert worked.exit_code == 0
    assert "1 released" in worked.stderr
    assert cli("runs", "show", run_id, "--json").json()["status"] == "pending"


def test_worker_options_are_validated(cli: Invoke) -> None:
    assert cli("worker", "--concurrency", "0").exit_code == 2
    bad = cli("worker", "--log-level", "loud")
    assert bad.exit_code == 2
    assert "unknown level 'loud'" in bad.stderr


def test_engine_warnings_show_on_stderr_unless_the_log_level_hides_them(cli: Invoke) -> None:
    cli("run", "boom", "-i", '"x"')
    only_greet = {"CORRAL_APP": "tests.cli.sample_app:corral"}
    worked = cli("worker", "--until-idle", env=only_greet)
    assert "WARNING corral.engine: run" in worked.stderr
    assert "unknown workflow 'boom'" in worked.stderr
    assert "releasing it" in worked.stderr
    quiet = cli("worker", "--until-idle", "--log-level", "error", env=only_greet)
    assert "WARNING" not in quiet.stderr
