"""`corral runs reconcile`: a real worker dies inside an at-most-once step; a person settles it."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

pytestmark = pytest.mark.slow


def backdate_leases(path: Path) -> None:
    """The dead worker's leases expire now rather than after their time-to-live."""
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("UPDATE runs SET lease_expires_at = 0 WHERE status = 'running'")
        conn.commit()


def test_reconcile_a_run_stranded_by_a_crash(corral_exe: Invoke, tmp_path: Path) -> None:
    run_id = corral_exe("run", "wire", "-i", "250").stdout.strip()
    crashed = corral_exe("worker", "--until-idle", env={"CORRAL_CRASH_AT": "step.after_dispatch"})
    assert crashed.exit_code == -9  # killed itself with SIGKILL, the intent committed
    backdate_leases(tmp_path / "corral.db")
    assert corral_exe("worker", "--until-idle").exit_code == 0
    stranded = corral_exe("runs", "show", run_id, "--json").json()
    assert stranded["status"] == "needs_reconciliation"

    neither = corral_exe("runs", "reconcile", run_id)
    assert neither.exit_code == 2
    assert "exactly one of --result JSON, --retry or --fail REASON" in neither.stderr

    settled = corral_exe("runs", "reconcile", run_id, "--result", '"wired by hand"')
    assert settled.exit_code == 0, settled.stderr
    assert "step 1 (send_wire) succeeded; the run is pending" in settled.stdout
    again = corral_exe("runs", "reconcile", run_id, "--retry")
    assert again.exit_code == 2
    assert "error (not_reconcilable)" in again.stderr

    assert corral_exe("worker", "--until-idle").exit_code == 0
    done = corral_exe("runs", "show", run_id, "--json").json()
    assert (done["status"], done["result"]) == ("succeeded", "wired by hand")
