"""Test the tests: the soak's checker must see each kind of anomaly it claims to count.

A checker that cannot see a duplicate proves nothing when it reports none (immudb once shipped a
verifier that skipped middle links). Each anomaly is planted by hand in a real Corral database
and a real ledger, and must be reported, once, under its own name.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from corral import Corral

from . import effect_ledger
from .harness import sqlite_url

RUN = "11111111-1111-4111-8111-111111111111"
LOST = "22222222-2222-4222-8222-222222222222"


async def make_corral_db(path: Path) -> None:
    async with Corral(sqlite_url(path)):
        pass  # opening creates the schema
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for run_id, status in ((RUN, "succeeded"), (LOST, "failed")):
            conn.execute(
                "INSERT INTO runs (run_id, tenant, workflow, workflow_version, status, input,"
                " created_at, updated_at) VALUES (?, 'default', 'durable_shape', '1', ?, '{}',"
                " 0, 0)",
                (run_id, status),
            )
        for seq, status in ((1, "succeeded"), (2, "succeeded"), (4, "succeeded"), (6, "started")):
            conn.execute(
                "INSERT INTO steps (run_id, seq, kind, name, status, started_at)"
                " VALUES (?, ?, 'step', 'tool', ?, 0)",
                (RUN, seq, status),
            )
    finally:
        conn.close()


def call(ledger: effect_ledger.Ledger, run_id: str, seq: int, label: str, **kw: object) -> None:
    ledger.call(
        kind=kw.get("kind", "idempotent"),  # type: ignore[arg-type]
        idempotency_key=f"{run_id}:{seq}",
        run_id=run_id,
        seq=seq,
        label=label,
        value=1,
        epoch=1,
        redelivered=False,
    )


async def test_the_checker_reports_every_planted_anomaly(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    await make_corral_db(db)
    path = tmp_path / "ledger.db"
    effect_ledger.create(path)
    ledger = effect_ledger.Ledger(path)
    try:
        call(ledger, RUN, 1, "0")
        call(ledger, RUN, 1, "0")  # a redelivery: deduplicated, not an anomaly
        call(ledger, RUN, 2, "1")
        call(ledger, RUN, 3, "0")  # label 0 applied under a second key, and step 3 not journaled
        call(ledger, "ghost", 1, "0")  # an effect of no run
        call(ledger, RUN, 5, "2", kind="at_most_once")
        call(ledger, RUN, 5, "2", kind="at_most_once")  # an at-most-once tool called twice
        # step 4 was journaled with no effect.
    finally:
        ledger.close()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        rows = [
            (RUN, 1, 100, 1, 0.0, 10.0),
            (RUN, 2, 200, 2, 5.0, 12.0),  # overlaps the executor (100, 1)
            (RUN, 3, 300, 3, 20.0, None),  # killed at 21: interrupted, not overlapping
            (RUN, 4, 400, 4, 30.0, None),  # no end and its process was not killed
        ]
        conn.executemany(
            "INSERT INTO executions (run_id, seq, pid, epoch, started_at, ended_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
    finally:
        conn.close()

    report = effect_ledger.check(path, db, deaths={300: 21.0})

    assert report.lost_runs == [(LOST, "failed")]
    assert report.duplicate_keys == []  # the UNIQUE key makes these impossible
    assert report.duplicate_steps == [(RUN, "0", 2)]
    assert sorted(report.orphan_effects) == sorted([f"{RUN}:3", "ghost:1"])
    assert report.missing_effects == [f"{RUN}:4"]
    assert report.repeated_at_most_once == [(f"{RUN}:5", 2)]
    assert report.open_journal_entries == [(RUN, 6)]
    assert [(o.first[:2], o.second[:2]) for o in report.overlaps] == [((100, 1), (200, 2))]
    assert report.unfinished_executions == [(RUN, 4, 400)]
    assert report.interrupted_executions == 1
    assert report.redelivered_keys == 1
    assert not report.ok
    assert report.anomalies == {
        "lost runs": 1,
        "duplicated effects (per key)": 0,
        "duplicated effects (per logical step)": 1,
        "effects with no run or step": 2,
        "journaled steps with no effect": 1,
        "at-most-once tools called twice": 1,
        "steps left in flight in succeeded runs": 1,
        "overlapping executions of one run": 1,
        "executions never ended by a live process": 1,
    }


async def test_the_checker_passes_a_clean_history(tmp_path: Path) -> None:
    db = tmp_path / "corral.db"
    await make_corral_db(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DELETE FROM runs WHERE run_id = ?", (LOST,))
        conn.execute("DELETE FROM steps WHERE seq IN (4, 6)")
    finally:
        conn.close()
    path = tmp_path / "ledger.db"
    effect_ledger.create(path)
    ledger = effect_ledger.Ledger(path)
    try:
        call(ledger, RUN, 1, "0")
        call(ledger, RUN, 2, "1")
        first = ledger.begin_execution(RUN, 1, 1)
        ledger.end_execution(first)
        second = ledger.begin_execution(RUN, 2, 2)
        ledger.end_execution(second)
    finally:
        ledger.close()

    report = effect_ledger.check(path, db, deaths={})

    assert report.ok, report.summary()
    assert report.effects == 2
