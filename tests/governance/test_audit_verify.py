"""Verifying the audit chain: every kind of tampering, done in SQL behind the store's back, is
found and the first bad entry named; a clean log never fails, even while appends run."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from corral.governance.audit import GENESIS, AuditEntry, append, entry_hash
from corral.governance.checkpoints import checkpoint, generate_key, key_id, load_private_key
from corral.governance.verify import VerifyReport, verify_chain
from corral.store import Store
from corral.store.postgresql import parse_postgres_url
from corral.store.scripts import Dialect, Script
from corral.store.sqlite import parse_sqlite_url

TENANT = "acme"
KINDS = ("policy.decision", "approval.requested", "approval.decided", "budget.exceeded")
PAGE = 4
"""A small page, so every test crosses page boundaries."""


@dataclass(frozen=True)
class Database:
    """The test's database in plain SQL (sqlite3, or psycopg in the URL's schema), behind the
    store's back: what an attacker with database access can do. `?` placeholders, no `%`."""

    url: str

    def _run(self, statement: str, params: Sequence[object]) -> tuple[list[tuple[Any, ...]], int]:
        if self.url.startswith("sqlite:"):
            path = parse_sqlite_url(self.url)[0]
            with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as lite:
                done = lite.execute(statement, tuple(params))
                return done.fetchall(), done.rowcount
        conninfo, schema = parse_postgres_url(self.url)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            cursor = conn.execute(sql.SQL(statement.replace("?", "%s")), tuple(params))
            rows = cursor.fetchall() if cursor.description is not None else []
            return rows, cursor.rowcount

    def query(self, statement: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self._run(statement, params)[0]

    def execute(self, statement: str, params: Sequence[object] = ()) -> int:
        return self._run(statement, params)[1]


def database(db_url: str) -> Database:
    return Database(db_url)


def entry(n: int) -> AuditEntry:
    return AuditEntry(
        kind=KINDS[n % len(KINDS)],
        actor="human:ada" if n % 2 else "agent:refunds",
        subject=f"run:r{n}:{n}",
        decision={"effect": "allow", "n": n, "reason": "ok ü"},
        payload_ref=None if n % 3 == 0 else f"run:r{n}:{n}",
    )


async def add(store: Store, n: int, *, tenant: str = TENANT) -> int:
    def script(dialect: Dialect) -> Script[int]:
        return (yield from append(tenant, entry(n), at=1_700_000_000.0 + n / 7, dialect=dialect))

    return await store.run_script(script)


async def build(store: Store, count: int = 10) -> None:
    for n in range(1, count + 1):
        await add(store, n)


async def verify(store: Store, **options: object) -> VerifyReport:
    return await verify_chain(store, TENANT, page_size=PAGE, **options)  # type: ignore[arg-type]


def rehash_from(db: Database, seq: int, *, tenant: str = TENANT) -> None:
    """Recompute every hash from `seq` on and the head, as an attacker who knows the scheme."""
    rows = db.query(
        "SELECT seq, at, kind, actor, subject, decision, payload_ref FROM audit_log"
        " WHERE tenant = ? ORDER BY seq",
        (tenant,),
    )
    previous = GENESIS
    for row_seq, at, kind, actor, subject, decision, payload_ref in rows:
        digest = entry_hash(
            previous, tenant, row_seq, at, kind, actor, subject, decision, payload_ref
        )
        if row_seq >= seq:
            db.execute(
                "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE tenant = ? AND seq = ?",
                (previous, digest, tenant, row_seq),
            )
        previous = digest
    db.execute(
        "UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant = ?", (rows[-1][0], previous, tenant)
    )


def assert_bad(report: VerifyReport, seq: int, reason: str) -> None:
    assert not report.ok, report
    assert report.first_bad is not None
    assert report.first_bad.seq == seq, report.describe()
    assert reason in report.first_bad.reason, report.describe()
    assert f"entry {seq}" in report.describe()


async def test_a_clean_log_verifies(store: Store) -> None:
    await build(store, 10)
    report = await verify(store)
    assert report.ok, report.describe()
    assert report.entries_checked == 10
    assert report.head_seq == 10
    assert report.first_bad is None
    assert "10 entries verified" in report.describe()
    assert any("cannot be ruled out" in warning for warning in report.warnings)


async def test_an_empty_log_verifies(store: Store) -> None:
    report = await verify(store)
    assert report.ok
    assert report.entries_checked == 0
    assert "empty" in report.describe()


async def test_tenants_have_separate_chains(store: Store, db_url: str) -> None:
    await build(store, 5)
    for n in range(3):
        await add(store, n, tenant="globex")
    database(db_url).execute("UPDATE audit_log SET actor = 'x' WHERE tenant = 'globex' AND seq = 2")
    assert (await verify(store)).ok
    other = await verify_chain(store, "globex")
    assert not other.ok
    assert other.first_bad is not None
    assert other.first_bad.seq == 2


NEW_VALUES: dict[str, object] = {
    "kind": "policy.applied",
    "actor": "human:mallory",
    "subject": "run:other:1",
    "decision": '{"effect":"deny"}',
    "payload_ref": "run:elsewhere:9",
    "at": 1_600_000_000.25,
    "prev_hash": "a" * 64,
    "hash": "b" * 64,
}


@pytest.mark.parametrize("column", list(NEW_VALUES))
async def test_editing_any_field_names_the_entry(store: Store, db_url: str, column: str) -> None:
    await build(store, 10)
    database(db_url).execute(
        f"UPDATE audit_log SET {column} = ? WHERE tenant = ? AND seq = 6",
        (NEW_VALUES[column], TENANT),
    )
    report = await verify(store)
    assert_bad(report, 6, "hash does not match its fields")
    assert report.entries_checked == 5


async def test_clearing_a_payload_ref_is_detected(store: Store, db_url: str) -> None:
    await build(store, 10)
    database(db_url).execute("UPDATE audit_log SET payload_ref = NULL WHERE seq = 5")
    assert_bad(await verify(store), 5, "hash does not match its fields")


async def test_an_edit_with_its_own_hash_recomputed_breaks_the_next_link(
    store: Store, db_url: str
) -> None:
    await build(store, 10)
    db = database(db_url)
    row = db.query(
        "SELECT seq, at, kind, actor, subject, decision, payload_ref, prev_hash FROM audit_log"
        " WHERE seq = 4"
    )[0]
    forged = entry_hash(
        row[7], TENANT, row[0], row[1], row[2], "human:mallory", row[4], row[5], row[6]
    )
    db.execute("UPDATE audit_log SET actor = 'human:mallory', hash = ? WHERE seq = 4", (forged,))
    assert_bad(await verify(store), 5, "prev_hash does not link to entry 4")


async def test_deleting_a_middle_entry_is_a_gap(store: Store, db_url: str) -> None:
    await build(store, 10)
    database(db_url).execute("DELETE FROM audit_log WHERE seq = 5")
    report = await verify(store)
    assert_bad(report, 5, "seq gap: 5 missing (deleted?)")


async def test_deleting_the_first_entry_is_a_gap(store: Store, db_url: str) -> None:
    await build(store, 10)
    database(db_url).execute("DELETE FROM audit_log WHERE seq = 1")
    assert_bad(await verify(store), 1, "seq gap: 1 missing")


async def test_deleting_the_last_entry_disagrees_with_the_head(store: Store, db_url: str) -> None:
    await build(store, 10)
    database(db_url).execute("DELETE FROM audit_log WHERE seq = 10")
    assert_bad(await verify(store), 10, "head says seq 10")


async def test_deleting_the_whole_log_disagrees_with_the_head(store: Store, db_url: str) -> None:
    await build(store, 10)
    database(db_url).execute("DELETE FROM audit_log")
    assert_bad(await verify(store), 10, "head says seq 10")


async def test_deleting_the_head_row_is_detected(store: Store, db_url: str) -> None:
    await build(store, 3)
    database(db_url).execute("DELETE FROM audit_heads")
    report = await verify(store)
    assert not report.ok
    assert report.first_bad is not None
    assert report.first_bad.seq == 3


async def test_inserting_beyond_the_head_is_detected(store: Store, db_url: str) -> None:
    await build(store, 10)
    db = database(db_url)
    last_hash = db.query("SELECT hash FROM audit_log WHERE seq = 10")[0][0]
    at = 1_700_000_100.0
    forged = entry_hash(
        last_hash, TENANT, 11, at, "approval.decided", "human:mallory", "x", "{}", None
    )
    db.execute(
        "INSERT INTO audit_log (tenant, seq, at, kind, actor, subject, decision, payload_ref,"
        " dedupe_key, prev_hash, hash) VALUES (?, 11, ?, 'approval.decided', 'human:mallory',"
        " 'x', '{}', NULL, NULL, ?, ?)",
        (TENANT, at, last_hash, forged),
    )
    assert_bad(await verify(store), 11, "entry beyond the head")


async def test_inserting_before_the_start_is_detected(store: Store, db_url: str) -> None:
    await build(store, 3)
    database(db_url).execute(
        "INSERT INTO audit_log (tenant, seq, at, kind, actor, subject, decision, payload_ref,"
        " dedupe_key, prev_hash, hash) SELECT tenant, 0, at, kind, actor, subject, decision,"
        " payload_ref, NULL, prev_hash, hash FROM audit_log WHERE seq = 1"
    )
    report = await verify(store)
    assert not report.ok
    assert report.first_bad is not None
    assert report.first_bad.seq == 0
    assert "before the chain's start" in report.first_bad.reason


async def test_inserting_in_the_middle_breaks_the_following_entry(
    store: Store, db_url: str
) -> None:
    await build(store, 10)
    db = database(db_url)
    # Make room at seq 5 (in two steps: the primary key must hold after each statement).
    db.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 5")
    db.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
    prev = db.query("SELECT hash FROM audit_log WHERE seq = 4")[0][0]
    at = 1_700_000_000.7
    forged = entry_hash(
        prev,
        TENANT,
        5,
        at,
        "approval.decided",
        "human:mallory",
        "approval:1",
        '{"status":"approved"}',
        None,
    )
    db.execute(
        "INSERT INTO audit_log (tenant, seq, at, kind, actor, subject, decision, payload_ref,"
        " dedupe_key, prev_hash, hash) VALUES (?, 5, ?, 'approval.decided', 'human:mallory',"
        " 'approval:1', ?, NULL, NULL, ?, ?)",
        (TENANT, at, '{"status":"approved"}', prev, forged),
    )
    last = db.query("SELECT seq, hash FROM audit_log ORDER BY seq DESC LIMIT 1")[0]
    db.execute("UPDATE audit_heads SET seq = ?, hash = ?", (last[0], last[1]))
    # The forged entry links and hashes correctly; the entry it pushed along no longer does.
    assert_bad(await verify(store), 6, "hash does not match its fields")


async def test_a_naively_inserted_entry_is_named(store: Store, db_url: str) -> None:
    await build(store, 10)
    db = database(db_url)
    db.execute("UPDATE audit_log SET seq = seq + 1000 WHERE seq >= 5")
    db.execute("UPDATE audit_log SET seq = seq - 999 WHERE seq >= 1000")
    db.execute(
        "INSERT INTO audit_log (tenant, seq, at, kind, actor, subject, decision, payload_ref,"
        " dedupe_key, prev_hash, hash) SELECT tenant, 5, at, kind, actor, subject, decision,"
        " payload_ref, NULL, prev_hash, hash FROM audit_log WHERE seq = 4"
    )
    assert_bad(await verify(store), 5, "hash does not match its fields")


async def test_swapping_two_entries_seqs_names_the_first(store: Store, db_url: str) -> None:
    await build(store, 10)
    db = database(db_url)
    db.execute("UPDATE audit_log SET seq = 1003 WHERE seq = 3")
    db.execute("UPDATE audit_log SET seq = 3 WHERE seq = 7")
    db.execute("UPDATE audit_log SET seq = 7 WHERE seq = 1003")
    assert_bad(await verify(store), 3, "hash does not match its fields")


async def test_a_rewritten_chain_passes_without_a_checkpoint(store: Store, db_url: str) -> None:
    await build(store, 10)
    db = database(db_url)
    db.execute("UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 4")
    rehash_from(db, 4)
    report = await verify(store)
    # Indistinguishable from a genuine chain: what the checkpoint is for, and the report says so.
    assert report.ok
    assert any("cannot be ruled out" in warning for warning in report.warnings)


async def test_a_rewritten_chain_behind_a_checkpoint_is_detected(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    public = generate_key(tmp_path / "audit.key")
    private = load_private_key(tmp_path / "audit.key")
    await build(store, 6)
    await checkpoint(store, TENANT, private, now=1_700_000_010.0)
    for n in range(7, 11):
        await add(store, n)
    clean = await verify(store, public_keys={key_id(public): public})
    assert clean.ok, clean.describe()
    assert clean.latest_verified_checkpoint == 6
    assert clean.signatures_verified == 1

    db = database(db_url)
    db.execute("UPDATE audit_log SET decision = ? WHERE seq = 4", ('{"effect":"allow"}',))
    rehash_from(db, 4)
    report = await verify(store, public_keys={key_id(public): public})
    assert_bad(report, 6, f"checkpoint at seq 6 (key {key_id(public)}) does not match the chain")
    # Without the public key the checkpoint row is still compared with the chain.
    assert_bad(await verify(store), 6, "does not match the chain")


async def test_rewriting_after_the_checkpoint_is_not_covered_by_it(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    public = generate_key(tmp_path / "audit.key")
    await build(store, 6)
    await checkpoint(store, TENANT, load_private_key(tmp_path / "audit.key"), now=1.0)
    for n in range(7, 11):
        await add(store, n)
    db = database(db_url)
    db.execute("UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 8")
    rehash_from(db, 8)
    report = await verify(store, public_keys={key_id(public): public})
    assert report.ok  # only entries up to the latest checkpoint are protected against rewrites
    assert report.latest_verified_checkpoint == 6


async def test_a_forged_checkpoint_fails_its_signature(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    public = generate_key(tmp_path / "audit.key")
    await build(store, 6)
    await checkpoint(store, TENANT, load_private_key(tmp_path / "audit.key"), now=1.0)
    db = database(db_url)
    db.execute("UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 2")
    rehash_from(db, 2)
    new_head = db.query("SELECT hash FROM audit_heads")[0][0]
    db.execute("UPDATE audit_checkpoints SET hash = ?", (new_head,))
    report = await verify(store, public_keys={key_id(public): public})
    assert_bad(report, 6, "checkpoint signature invalid")
    # Without the public key, a forged checkpoint cannot be told apart: the report warns.
    unchecked = await verify(store)
    assert unchecked.ok
    assert any("signatures were not checked" in warning for warning in unchecked.warnings)


async def test_deleting_checkpointed_entries_and_resetting_the_head(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    public = generate_key(tmp_path / "audit.key")
    await build(store, 8)
    await checkpoint(store, TENANT, load_private_key(tmp_path / "audit.key"), now=1.0)
    db = database(db_url)
    db.execute("DELETE FROM audit_log WHERE seq >= 7")
    db.execute("UPDATE audit_heads SET seq = 6, hash = (SELECT hash FROM audit_log WHERE seq = 6)")
    report = await verify(store, public_keys={key_id(public): public})
    assert_bad(report, 8, "checkpoint at seq 8")


async def test_no_false_positive_while_200_appends_run(store: Store) -> None:
    await build(store, 20)

    async def appender(first: int) -> list[int]:
        # Four writers, each appending one entry at a time: the chain grows throughout.
        return [await add(store, n) for n in range(first, first + 50)]

    appends = asyncio.gather(*(appender(first) for first in (21, 71, 121, 171)))
    heads_seen: set[int] = set()
    try:
        while not appends.done():
            report = await verify_chain(store, TENANT, page_size=16)
            assert report.ok, report.describe()
            heads_seen.add(report.head_seq)
    finally:
        seqs = [seq for chunk in await appends for seq in chunk]
    assert sorted(seqs) == list(range(21, 221))
    assert any(20 <= head < 220 for head in heads_seen), heads_seen  # verified mid-append
    final = await verify(store)
    assert final.ok, final.describe()
    assert final.entries_checked == 220
