"""Kill the worker in the middle of an agent loop: the resumed run repeats no journaled call.

The agent's model and tools record every call in a ledger (tests/durability/agent_worker.py).
A worker is armed to SIGKILL itself at the K-th pass of a crash point; the lease is back-dated
in SQL; a fresh worker resumes the run by replay. Every model call and tool call whose step was
committed before the crash must have run exactly once; a call in flight at the crash runs again
with the same idempotency key (at-least-once), and nothing else does.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from corral import Corral

from .agent_worker import EXPECTED, researcher
from .databases import Database, PostgresDatabase, SQLiteDatabase, backdate_leases

pytestmark = pytest.mark.slow

TESTS_DIR = Path(__file__).resolve().parent.parent

# The journal of one run: model, fetch, fetch, model, summarize, model (steps 1-6).
CRASHES = [
    "step.after_commit:1",  # after the first model call was journaled
    "step.after_effect:2",  # a parallel fetch had its effect, not yet journaled
    "step.after_commit:4",  # after the second model call
    "step.after_effect:6",  # the final model call ran, its answer not yet journaled
]


def run_worker(url: str, ledger: Path, crash_at: str | None) -> int:
    env = dict(os.environ, PYTHONPATH=str(TESTS_DIR))
    env.pop("CORRAL_CRASH_AT", None)
    if crash_at:
        env["CORRAL_CRASH_AT"] = crash_at
    done = subprocess.run(
        [sys.executable, "-m", "durability.agent_worker", url, str(ledger)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode in (0, -9), done.stderr[-2000:]
    return done.returncode


def database_of(url: str) -> Database:
    if url.startswith("sqlite:///"):
        return SQLiteDatabase(Path(url.removeprefix("sqlite:///")))
    return PostgresDatabase(url)


def calls(ledger: Path) -> Counter[tuple[str, str]]:
    with sqlite3.connect(ledger) as db:
        return Counter(db.execute("SELECT kind, key FROM calls").fetchall())


@pytest.mark.parametrize("crash_at", CRASHES)
async def test_agent_loop_resumes_without_repeating_journaled_calls(
    db_url: str, tmp_path: Path, crash_at: str
) -> None:
    ledger = tmp_path / "ledger.db"
    async with Corral(db_url) as corral:
        run_id = (await corral.start(researcher, "research alpha and beta")).run_id

    assert run_worker(db_url, ledger, crash_at) == -9, "the armed worker should have died"
    async with Corral(db_url) as corral:
        committed_before = {
            f"{run_id}:{r.seq}" for r in await corral.journal(run_id) if r.status == "succeeded"
        }
        assert (await corral.get_run(run_id)).status == "running"
    backdate_leases(database_of(db_url))

    assert run_worker(db_url, ledger, None) == 0
    async with Corral(db_url) as corral:
        run = await corral.get_run(run_id)
        journal = await corral.journal(run_id)
    assert run.status == "succeeded", run.error
    assert json.loads(run.result or "") == EXPECTED
    assert [r.name for r in journal] == [
        "model:researcher",
        "tool:fetch",
        "tool:fetch",
        "model:researcher",
        "tool:summarize",
        "model:researcher",
    ]
    made = calls(ledger)
    keys = Counter(key for _, key in made.elements())
    assert set(keys) == {f"{run_id}:{seq}" for seq in range(1, 7)}, "every step ran"
    repeated = {key for key, count in keys.items() if count > 1}
    assert not repeated & committed_before, f"journaled calls ran again: {repeated}"
    # At most the calls in flight together: the two parallel fetches, or one model call.
    assert len(repeated) <= 2, f"only calls in flight at the crash may run again: {repeated}"
    assert all(keys[key] == 2 for key in repeated), keys
    if crash_at.startswith("step.after_effect"):
        assert repeated, "the call in flight at the crash runs again, with the same key"
