"""Appending to the audit chain: in the caller's transaction, chained, idempotent by key."""

from __future__ import annotations

import asyncio

from corral.governance.audit import GENESIS, AuditEntry, append, read_entries, record_hash
from corral.store import Store
from corral.store.scripts import Dialect, Script, ScriptFactory


def add(entry: AuditEntry, at: float) -> ScriptFactory[int]:
    def script(dialect: Dialect) -> Script[int]:
        return (yield from append("acme", entry, at=at, dialect=dialect))

    return script


async def test_entries_chain_and_dedupe(store: Store) -> None:
    first = AuditEntry("policy.decision", "agent:refunds", "run:r1:3", {"effect": "deny"})
    again = AuditEntry("policy.decision", "agent:refunds", "run:r1:4", {"x": 1}, dedupe_key="k")
    assert await store.run_script(add(first, 1.5)) == 1
    assert await store.run_script(add(again, 2.0)) == 2
    assert await store.run_script(add(again, 3.0)) == 2
    records = await store.read_script(lambda d: read_entries("acme"))
    assert [r.seq for r in records] == [1, 2]
    assert records[0].prev_hash == GENESIS
    assert records[1].prev_hash == records[0].hash
    assert all(record_hash(r) == r.hash for r in records)


async def test_concurrent_appends_make_one_unbroken_chain(store: Store) -> None:
    entries = [AuditEntry("e", "corral", f"s{n}", {"n": n}) for n in range(40)]
    appends = [store.run_script(add(e, float(n))) for n, e in enumerate(entries)]
    seqs = await asyncio.gather(*appends)
    assert sorted(seqs) == list(range(1, 41))
    records = await store.read_script(lambda d: read_entries("acme"))
    previous = GENESIS
    for record in records:
        assert record.prev_hash == previous
        assert record_hash(record) == record.hash
        previous = record.hash
