"""The outside world of the durability suites: a tool's effect ledger, and a checker over it.

Step bodies call a "tool" that records every call in `calls` and applies its effect in `effects`,
keyed UNIQUE by the step's idempotency key: the downstream deduplication Corral's contract relies
on (RELIABILITY.md: "tool call, idempotent: effect exactly once, call at least once"). Calls may
repeat after a crash; effects may not. An at-most-once tool records its calls only: it has no key
to deduplicate by, so the engine must never call it twice.

Every step-body execution is also recorded with the executor that ran it (process id and lease
epoch) and when it started and ended, so the checker can find two live executors of one run at
once. The ledger is its own SQLite file, apart from Corral's database: a crash of a worker can
lose Corral's uncommitted writes but not the ledger's committed ones, as with a real tool.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ToolKind = Literal["idempotent", "at_most_once"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    call_id          INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key  TEXT NOT NULL,
    run_id           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    label            TEXT NOT NULL,
    kind             TEXT NOT NULL,
    pid              INTEGER NOT NULL,
    epoch            INTEGER NOT NULL,
    redelivered      INTEGER NOT NULL,
    at               REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    idempotency_key  TEXT NOT NULL UNIQUE,
    run_id           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    label            TEXT NOT NULL,
    value            INTEGER NOT NULL,
    call_id          INTEGER NOT NULL,
    at               REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS executions (
    execution_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id           TEXT NOT NULL,
    seq              INTEGER NOT NULL,
    pid              INTEGER NOT NULL,
    epoch            INTEGER NOT NULL,
    started_at       REAL NOT NULL,
    ended_at         REAL
);
"""


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    return conn


def create(path: Path) -> None:
    """Create an empty ledger (before any worker process opens it)."""
    conn = _connect(path)
    try:
        conn.executescript(SCHEMA)
    finally:
        conn.close()


class Ledger:
    """One process's connection to the ledger. Writes are short transactions on the caller's
    thread: each commits before the tool returns, like a remote system acknowledging a call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = _connect(path)
        self._pid = os.getpid()

    def close(self) -> None:
        self._conn.close()

    def begin_execution(self, run_id: str, seq: int, epoch: int) -> int:
        cursor = self._conn.execute(
            "INSERT INTO executions (run_id, seq, pid, epoch, started_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, seq, self._pid, epoch, time.time()),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def end_execution(self, execution_id: int) -> None:
        self._conn.execute(
            "UPDATE executions SET ended_at = ? WHERE execution_id = ?",
            (time.time(), execution_id),
        )

    def call(
        self,
        *,
        kind: ToolKind,
        idempotency_key: str,
        run_id: str,
        seq: int,
        label: str,
        value: int,
        epoch: int,
        redelivered: bool,
    ) -> bool:
        """Record a call and, for an idempotent tool, apply its effect unless its key already
        has; True if this call applied an effect. One transaction: the call and its effect
        commit together or not at all."""
        conn = self._conn
        now = time.time()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO calls (idempotency_key, run_id, seq, label, kind, pid, epoch,"
                " redelivered, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (idempotency_key, run_id, seq, label, kind, self._pid, epoch, redelivered, now),
            )
            applied = False
            if kind == "idempotent":
                applied = (
                    conn.execute(
                        "INSERT INTO effects (idempotency_key, run_id, seq, label, value,"
                        " call_id, at) VALUES (?, ?, ?, ?, ?, ?, ?)"
                        " ON CONFLICT (idempotency_key) DO NOTHING",
                        (idempotency_key, run_id, seq, label, value, cursor.lastrowid, now),
                    ).rowcount
                    == 1
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return applied


_ledger: Ledger | None = None


def configure(path: Path | None) -> None:
    """Point this process's tools at a ledger file (None: tools record nothing)."""
    global _ledger
    if _ledger is not None:
        _ledger.close()
    _ledger = Ledger(path) if path is not None else None


def current() -> Ledger | None:
    return _ledger


# -- the checker -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overlap:
    """Two executors (pid, lease epoch) of one run that were alive at the same time."""

    run_id: str
    first: tuple[int, int, float, float]
    second: tuple[int, int, float, float]


@dataclass
class Report:
    """A Jepsen-style classification of every run and every effect after the fleet drained."""

    runs: int = 0
    lost_runs: list[tuple[str, str]] = field(default_factory=list)
    duplicate_keys: list[tuple[str, int]] = field(default_factory=list)
    duplicate_steps: list[tuple[str, str, int]] = field(default_factory=list)
    orphan_effects: list[str] = field(default_factory=list)
    missing_effects: list[str] = field(default_factory=list)
    repeated_at_most_once: list[tuple[str, int]] = field(default_factory=list)
    open_journal_entries: list[tuple[str, int]] = field(default_factory=list)
    overlaps: list[Overlap] = field(default_factory=list)
    unfinished_executions: list[tuple[str, int, int]] = field(default_factory=list)
    calls: int = 0
    effects: int = 0
    redelivered_keys: int = 0
    executions: int = 0
    interrupted_executions: int = 0
    takeovers: int = 0
    """Runs whose steps were executed by more than one worker process."""

    @property
    def anomalies(self) -> dict[str, int]:
        return {
            "lost runs": len(self.lost_runs),
            "duplicated effects (per key)": len(self.duplicate_keys),
            "duplicated effects (per logical step)": len(self.duplicate_steps),
            "effects with no run or step": len(self.orphan_effects),
            "journaled steps with no effect": len(self.missing_effects),
            "at-most-once tools called twice": len(self.repeated_at_most_once),
            "steps left in flight in succeeded runs": len(self.open_journal_entries),
            "overlapping executions of one run": len(self.overlaps),
            "executions never ended by a live process": len(self.unfinished_executions),
        }

    @property
    def ok(self) -> bool:
        return not any(self.anomalies.values())

    def summary(self) -> str:
        lines = [
            f"runs={self.runs} calls={self.calls} effects={self.effects} "
            f"redelivered_keys={self.redelivered_keys} executions={self.executions} "
            f"interrupted_executions={self.interrupted_executions} takeovers={self.takeovers}"
        ]
        lines += [f"  {name}: {count}" for name, count in self.anomalies.items()]
        examples: dict[str, Sequence[object]] = {
            "lost": self.lost_runs,
            "dup keys": self.duplicate_keys,
            "dup steps": self.duplicate_steps,
            "orphans": self.orphan_effects,
            "missing": self.missing_effects,
            "amo twice": self.repeated_at_most_once,
            "open steps": self.open_journal_entries,
            "overlaps": self.overlaps,
            "unfinished": self.unfinished_executions,
        }
        lines += [f"  e.g. {name}: {items[:3]}" for name, items in examples.items() if items]
        return "\n".join(lines)


def check(
    ledger_path: Path,
    corral_db: Path,
    *,
    deaths: dict[int, float],
    expect_succeeded: bool = True,
) -> Report:
    """Classify runs and effects. `deaths` maps each killed worker's pid to when it was dead:
    its executions that never recorded an end ended then. With `expect_succeeded`, every run
    (children included) that did not succeed is lost."""
    report = Report()
    conn = sqlite3.connect(ledger_path, timeout=30.0)
    try:
        conn.execute("ATTACH DATABASE ? AS corral", (str(corral_db),))
        report.runs = conn.execute("SELECT count(*) FROM corral.runs").fetchone()[0]
        if expect_succeeded:
            report.lost_runs = conn.execute(
                "SELECT run_id, status FROM corral.runs WHERE status != 'succeeded'"
            ).fetchall()
        report.calls = conn.execute("SELECT count(*) FROM calls").fetchone()[0]
        report.effects = conn.execute("SELECT count(*) FROM effects").fetchone()[0]
        report.redelivered_keys = conn.execute(
            "SELECT count(*) FROM (SELECT idempotency_key FROM calls WHERE kind = 'idempotent'"
            " GROUP BY idempotency_key HAVING count(*) > 1)"
        ).fetchone()[0]
        report.duplicate_keys = conn.execute(
            "SELECT idempotency_key, count(*) FROM effects GROUP BY idempotency_key"
            " HAVING count(*) > 1"
        ).fetchall()
        # The key must be stable: one logical step applied under two keys is a duplicate too.
        report.duplicate_steps = conn.execute(
            "SELECT run_id, label, count(*) FROM effects GROUP BY run_id, label HAVING count(*) > 1"
        ).fetchall()
        report.orphan_effects = [
            row[0]
            for row in conn.execute(
                "SELECT e.idempotency_key FROM effects e LEFT JOIN corral.steps s"
                " ON s.run_id = e.run_id AND s.seq = e.seq AND s.kind = 'step'"
                " AND s.status = 'succeeded' AND s.name = 'tool'"
                " LEFT JOIN corral.runs r ON r.run_id = e.run_id"
                " WHERE s.run_id IS NULL OR r.run_id IS NULL"
            )
        ]
        report.missing_effects = [
            f"{row[0]}:{row[1]}"
            for row in conn.execute(
                "SELECT s.run_id, s.seq FROM corral.steps s LEFT JOIN effects e"
                " ON e.run_id = s.run_id AND e.seq = s.seq"
                " WHERE s.kind = 'step' AND s.name = 'tool' AND s.status = 'succeeded'"
                " AND e.run_id IS NULL"
            )
        ]
        report.repeated_at_most_once = conn.execute(
            "SELECT idempotency_key, count(*) FROM calls WHERE kind = 'at_most_once'"
            " GROUP BY idempotency_key HAVING count(*) > 1"
        ).fetchall()
        report.open_journal_entries = conn.execute(
            "SELECT s.run_id, s.seq FROM corral.steps s JOIN corral.runs r USING (run_id)"
            " WHERE r.status = 'succeeded' AND s.status = 'started'"
        ).fetchall()
        rows = conn.execute(
            "SELECT run_id, seq, pid, epoch, started_at, ended_at FROM executions"
        ).fetchall()
    finally:
        conn.close()
    report.executions = len(rows)
    spans: dict[str, dict[tuple[int, int], list[float]]] = defaultdict(dict)
    for run_id, seq, pid, epoch, started_at, ended_at in rows:
        if ended_at is None:
            if pid in deaths:
                report.interrupted_executions += 1
                ended_at = deaths[pid]
            else:
                report.unfinished_executions.append((run_id, seq, pid))
                ended_at = math.inf
        span = spans[run_id].setdefault((pid, epoch), [started_at, ended_at])
        span[0] = min(span[0], started_at)
        span[1] = max(span[1], ended_at)
    report.overlaps = _overlaps(spans)
    report.takeovers = sum(
        1 for executors in spans.values() if len({pid for pid, _ in executors}) > 1
    )
    return report


def _overlaps(spans: dict[str, dict[tuple[int, int], list[float]]]) -> list[Overlap]:
    """Executors of one run, each spanning its first start to its last end (or its death): a
    claim's executor is alive over one interval, and no two claims of one run may overlap."""
    found: list[Overlap] = []
    for run_id, executors in spans.items():
        ordered = sorted(
            ((pid, epoch, start, end) for (pid, epoch), (start, end) in executors.items()),
            key=lambda item: item[2],
        )
        for i, first in enumerate(ordered):
            for second in ordered[i + 1 :]:
                if second[2] >= first[3]:
                    break
                found.append(Overlap(run_id, first, second))
    return found
