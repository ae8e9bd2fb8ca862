"""A stand-in payment provider that deduplicates charges by idempotency key, as real ones do.

It keeps its own SQLite file beside Corral's, so the demo can show that a charge retried after a
crash is applied once: every attempt is counted, every charge is applied once per key.
"""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

LEDGER = Path(".corral/demo-payments.db")


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS charges (idempotency_key TEXT PRIMARY KEY,"
        " customer TEXT NOT NULL, amount_cents INTEGER NOT NULL, attempts INTEGER NOT NULL)"
    )
    return conn


def charge(idempotency_key: str, customer: str, amount_cents: int, path: Path = LEDGER) -> str:
    """Charge once per key; a repeated request is acknowledged, not applied again."""
    with closing(_connect(path)) as conn:
        conn.execute(
            "INSERT INTO charges VALUES (?, ?, ?, 1) ON CONFLICT (idempotency_key)"
            " DO UPDATE SET attempts = attempts + 1",
            (idempotency_key, customer, amount_cents),
        )
    return "ch_" + idempotency_key.rsplit(":", 1)[0][:8] + "_" + idempotency_key.rsplit(":", 1)[1]


def attempts(idempotency_key_prefix: str, path: Path = LEDGER) -> list[tuple[str, int]]:
    """(key, attempts) of the charges whose key starts with the prefix (a run id)."""
    with closing(_connect(path)) as conn:
        rows = conn.execute(
            "SELECT idempotency_key, attempts FROM charges WHERE idempotency_key LIKE ?",
            (idempotency_key_prefix + "%",),
        ).fetchall()
    return [(key, count) for key, count in rows]
