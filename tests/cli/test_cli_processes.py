"""The real `corral` executable, as separate processes sharing one SQLite file.

Each process has a timeout; long-lived ones (a worker, a lock holder) are killed at teardown.
Waiting for another process to make progress polls with a deadline.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

pytestmark = pytest.mark.slow

PROCESS_TIMEOUT = 60.0
Spawn = Callable[..., subprocess.Popen[str]]
LockHolder = Callable[[Path], subprocess.Popen[str]]


def show(corral_exe: Invoke, run_id: str) -> Any:
    shown = corral_exe("runs", "show", run_id, "--json")
    assert shown.exit_code == 0, shown.stderr
    return shown.json()


def wait_until(condition: Callable[[], bool], *, what: str, deadline: float = 30.0) -> None:
    give_up = time.monotonic() + deadline
    while not condition():
        assert time.monotonic() < give_up, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_run_then_worker_until_idle_then_show(corral_exe: Invoke) -> None:
    started = corral_exe("run", "greet", "--input", '{"name": "Ada", "times": 2}').no_traceback()
    assert started.exit_code == 0
    run_id = started.stdout.strip()
    assert show(corral_exe, run_id)["status"] == "pending"

    worked = corral_exe("worker", "--until-idle").no_traceback()
    assert worked.exit_code == 0
    assert worked.stdout == ""
    assert "claimed 1 run(s); 1 succeeded" in worked.stderr

    detail = show(corral_exe, run_id)
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"greeting": "hello Ada hello Ada"}
    assert [(s["seq"], s["name"], s["status"]) for s in detail["steps"]] == [
        (1, "make_greeting", "succeeded")
    ]


def test_run_wait_exit_codes(corral_exe: Invoke) -> None:
    done = corral_exe("run", "greet", "-i", '{"name": "W"}', "--wait").no_traceback()
    assert done.exit_code == 0
    assert "status: succeeded" in done.stdout
    failed = corral_exe("run", "boom", "-i", '"x"', "--wait").no_traceback()
    assert failed.exit_code == 1
    assert "ValueError: kaboom: x" in failed.stdout
    parked = corral_exe("run", "approval", "-i", "{}", "--wait").no_traceback()
    assert parked.exit_code == 4
    assert "signal 'approve'" in parked.stderr


def test_signal_a_waiting_run_then_a_worker_resumes_it(corral_exe: Invoke) -> None:
    parked = corral_exe("run", "approval", "-i", '{"id": 1}', "--wait")
    assert parked.exit_code == 4
    run_id = parked.stdout.splitlines()[0]
    sent = corral_exe("signal", run_id, "approve", "--data", '{"by": "ada"}').no_traceback()
    assert sent.exit_code == 0
    assert corral_exe("worker", "--until-idle").exit_code == 0
    detail = show(corral_exe, run_id)
    assert detail["status"] == "succeeded"
    assert detail["result"] == {"request": {"id": 1}, "decision": {"by": "ada"}}


def test_cancel_then_signal_is_refused(corral_exe: Invoke) -> None:
    run_id = corral_exe("run", "approval", "-i", "{}").stdout.strip()
    cancelled = corral_exe("runs", "cancel", run_id).no_traceback()
    assert cancelled.exit_code == 0
    assert show(corral_exe, run_id)["status"] == "cancelled"
    late = corral_exe("signal", run_id, "approve").no_traceback()
    assert late.exit_code == 2
    assert "already cancelled" in late.stderr


def test_bad_input_exit_codes_and_messages(corral_exe: Invoke) -> None:
    unknown = corral_exe("run", "nope").no_traceback()
    assert unknown.exit_code == 2
    assert "unknown workflow 'nope'" in unknown.stderr
    assert "greet" in unknown.stderr

    schema = corral_exe("run", "greet", "-i", '{"name": 3}').no_traceback()
    assert schema.exit_code == 2
    assert "name: Input should be a valid string" in schema.stderr

    malformed = corral_exe("run", "greet", "-i", "{'name': 'x'}").no_traceback()
    assert malformed.exit_code == 2
    assert "--input is not valid JSON" in malformed.stderr
    assert "line 1 column 2" in malformed.stderr

    missing = corral_exe("runs", "show", "no-such-run").no_traceback()
    assert missing.exit_code == 2
    assert "no run 'no-such-run'" in missing.stderr

    status = corral_exe("runs", "list", "--status", "finished").no_traceback()
    assert status.exit_code == 2
    assert "unknown status 'finished'" in status.stderr

    done = corral_exe("run", "greet", "-i", '{"name": "x"}', "--wait").stdout.splitlines()[0]
    late = corral_exe("signal", done, "approve").no_traceback()
    assert late.exit_code == 2
    assert "already succeeded" in late.stderr
    assert corral_exe("runs", "list", "--json").json()["runs"][0]["run_id"] == done


def test_a_corrupt_database_exits_3(corral_exe: Invoke, tmp_path: Path) -> None:
    junk = tmp_path / "random.db"
    junk.write_bytes(os.urandom(4096))
    bad = corral_exe("runs", "list", env={"CORRAL_DATABASE_URL": f"sqlite:///{junk}"})
    bad.no_traceback()
    assert bad.exit_code == 3
    assert "random.db is not a Corral database or is corrupt" in bad.stderr


def test_a_locked_database_exits_3(
    corral_exe: Invoke, tmp_path: Path, hold_write_lock: LockHolder
) -> None:
    assert corral_exe("run", "greet", "-i", '{"name": "a"}').exit_code == 0  # creates the db
    hold_write_lock(tmp_path / "corral.db")
    locked = corral_exe("--busy-timeout", "0.2", "run", "greet", "-i", '{"name": "x"}')
    locked.no_traceback()
    assert locked.exit_code == 3
    assert "is locked by another process" in locked.stderr


def test_sigterm_stops_a_worker_gracefully_and_hands_its_run_back(
    corral_exe: Invoke, spawn: Spawn, corral_argv: list[str]
) -> None:
    worker = spawn([*corral_argv, "worker", "--poll-interval", "0.05", "--worker-id", "w1"])
    assert worker.stderr is not None
    assert "worker w1 started on" in worker.stderr.readline()

    run_id = corral_exe("run", "count", "-i", "30").stdout.strip()
    wait_until(lambda: len(show(corral_exe, run_id)["steps"]) >= 2, what="the worker to start")
    worker.send_signal(signal.SIGTERM)
    _, stderr = worker.communicate(timeout=PROCESS_TIMEOUT)
    assert worker.returncode == 0, stderr
    assert "stopping; runs in flight are handed back" in stderr
    assert "worker w1 stopped by a signal: claimed 1 run(s); 1 waiting" in stderr
    assert "Traceback" not in stderr

    handed_back = show(corral_exe, run_id)
    assert handed_back["status"] == "waiting"  # unloaded, runnable at once
    assert handed_back["lease_owner"] is None
    assert 2 <= len(handed_back["steps"]) < 30

    assert corral_exe("worker", "--until-idle").exit_code == 0
    detail = show(corral_exe, run_id)
    assert detail["status"] == "succeeded"
    assert detail["result"] == sum(range(30))
    # Every step ran to completion once; none was repeated or skipped.
    assert [s["seq"] for s in detail["steps"]] == list(range(1, 31))
    assert all(s["status"] == "succeeded" for s in detail["steps"])


def test_ctrl_c_during_run_wait_hands_the_run_back_and_exits_4(
    corral_exe: Invoke, spawn: Spawn, corral_argv: list[str]
) -> None:
    waiting = spawn([*corral_argv, "run", "count", "-i", "30", "--wait"])
    assert waiting.stdout is not None
    run_id = waiting.stdout.readline().strip()  # printed before the wait begins
    wait_until(lambda: len(show(corral_exe, run_id)["steps"]) >= 2, what="the run to start")
    waiting.send_signal(signal.SIGINT)
    stdout, stderr = waiting.communicate(timeout=PROCESS_TIMEOUT)
    assert waiting.returncode == 4, stderr
    assert "status: waiting" in stdout
    assert "interrupted: the run was handed back" in stderr
    assert "Traceback" not in stderr
    assert corral_exe("worker", "--until-idle").exit_code == 0
    detail = show(corral_exe, run_id)
    assert detail["status"] == "succeeded"
    assert [s["seq"] for s in detail["steps"]] == list(range(1, 31))


def test_a_long_lived_worker_picks_up_a_signal_sent_from_another_process(
    corral_exe: Invoke, spawn: Spawn, corral_argv: list[str]
) -> None:
    worker = spawn([*corral_argv, "worker", "--poll-interval", "0.05"])
    assert worker.stderr is not None
    assert "started on" in worker.stderr.readline()
    run_id = corral_exe("run", "approval", "-i", "{}").stdout.strip()
    wait_until(lambda: show(corral_exe, run_id)["status"] == "waiting", what="the run to wait")
    assert corral_exe("signal", run_id, "approve", "--data", "true").exit_code == 0
    wait_until(lambda: show(corral_exe, run_id)["status"] == "succeeded", what="the resume")
    worker.send_signal(signal.SIGINT)
    _, stderr = worker.communicate(timeout=PROCESS_TIMEOUT)
    assert worker.returncode == 0, stderr
    assert "claimed 2 run(s); 1 succeeded, 1 waiting" in stderr


def test_a_workflow_named_by_reference_from_the_current_directory(
    corral_exe: Invoke, tmp_path: Path
) -> None:
    (tmp_path / "myflows_cli_proc.py").write_text(
        "from corral import RunContext\n\n"
        "async def double(ctx: RunContext, n: int) -> int:\n"
        "    return 2 * n\n",
        encoding="utf-8",
    )
    done = corral_exe("run", "myflows_cli_proc:double", "-i", "21", "--wait", "--json")
    assert done.exit_code == 0, done.stderr
    assert done.json()["result"] == 42
    assert done.json()["workflow"] == "myflows_cli_proc:double"


def test_python_dash_m_corral_cli(tmp_path: Path, db_url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "corral.cli", "--version"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0
    assert done.stdout.startswith("corral ")


def test_stdout_of_run_is_just_the_id_for_shell_capture(corral_exe: Invoke) -> None:
    started = corral_exe("run", "greet", "-i", '{"name": "sh"}')
    assert started.stdout.count("\n") == 1
    assert json.loads(corral_exe("runs", "list", "--json").stdout)["runs"][0]["run_id"] == (
        started.stdout.strip()
    )
