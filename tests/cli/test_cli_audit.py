"""`corral audit verify|keygen|checkpoint|export|list` on SQLite, tampered with in SQL."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corral.governance.audit import AuditEntry, append
from corral.governance.identity import Principal, add_principal
from corral.store import SQLiteStore
from corral.store.scripts import Dialect, Script
from corral.store.sqlite import parse_sqlite_url

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke

KINDS = ("policy.decision", "approval.requested", "approval.decided")


def populate(db_url: str, count: int = 6, *, first: int = 1) -> None:
    """Append `count` entries to tenant `default`'s chain, as governance code does."""

    async def write() -> None:
        store = SQLiteStore(db_url)
        await store.open()
        try:
            for n in range(first, first + count):
                entry = AuditEntry(
                    kind=KINDS[n % 3],
                    actor="human:ada",
                    subject=f"approval:{n}",
                    decision={"status": "approved", "reason": f"checked by ada{n}@example.com"},
                    payload_ref=f"run:r{n}:3",
                )

                def script(
                    dialect: Dialect, entry: AuditEntry = entry, at: float = 1_790_000_000.0 + n
                ) -> Script[int]:
                    return (yield from append("default", entry, at=at, dialect=dialect))

                await store.run_script(script)
        finally:
            await store.close()

    asyncio.run(write())


def add_admin(db_url: str, name: str) -> None:
    async def write() -> None:
        store = SQLiteStore(db_url)
        await store.open()
        try:
            principal = Principal(tenant="default", name=name, roles=("admin",))
            await store.run_script(
                lambda d: add_principal(principal, actor="test", now=1.0, dialect=d)
            )
        finally:
            await store.close()

    asyncio.run(write())


def sql(db_url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    path = parse_sqlite_url(db_url)[0]
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
        return conn.execute(statement, params).fetchall()


def test_verify_a_clean_log(cli: Invoke, db_url: str) -> None:
    populate(db_url)
    done = cli("audit", "verify").no_traceback()
    assert done.exit_code == 0, done.stderr
    assert done.stdout.strip() == "audit log of tenant default: 6 entries verified (seq 1–6)"
    assert "cannot be ruled out without one" in done.stderr


def test_verify_an_empty_log(cli: Invoke) -> None:
    done = cli("audit", "verify")
    assert done.exit_code == 0
    assert "empty" in done.stdout


def test_verify_names_the_first_bad_entry(cli: Invoke, db_url: str) -> None:
    populate(db_url)
    sql(db_url, 'UPDATE audit_log SET decision = \'{"status":"rejected"}\' WHERE seq = 5')
    sql(db_url, "DELETE FROM audit_log WHERE seq = 6")
    done = cli("audit", "verify").no_traceback()
    assert done.exit_code == 1
    assert done.stdout.strip() == (
        "audit log of tenant default: entry 5 (approval.decided, 2026-09-21T14:13:25.000Z): "
        "hash does not match its fields"
    )
    shown = cli("audit", "verify", "--json")
    assert shown.exit_code == 1
    report = shown.json()
    assert report["ok"] is False
    assert report["first_bad"] == {
        "seq": 5,
        "reason": "hash does not match its fields",
        "kind": "approval.decided",
        "at": "2026-09-21T14:13:25.000Z",
    }
    assert report["entries_checked"] == 4


def test_verify_a_deleted_last_entry(cli: Invoke, db_url: str) -> None:
    populate(db_url)
    sql(db_url, "DELETE FROM audit_log WHERE seq = 6")
    done = cli("audit", "verify")
    assert done.exit_code == 1
    assert "entry 6: head says seq 6" in done.stdout


def test_keygen_checkpoint_and_a_rewrite_behind_it(
    cli: Invoke, db_url: str, tmp_path: Path
) -> None:
    populate(db_url, 4)
    made = cli("audit", "keygen", "--out", "audit.key", "--json").no_traceback()
    assert made.exit_code == 0, made.stderr
    key = made.json()
    assert key["public_key"] == "audit.key.pub"
    assert key["audit_seq"] == 5  # the key's creation is itself audited
    assert (tmp_path / "audit.key").stat().st_mode & 0o077 == 0
    again = cli("audit", "keygen", "--out", "audit.key")
    assert again.exit_code == 2
    assert "already exists" in again.stderr

    taken = cli("audit", "checkpoint", "--key", "audit.key").no_traceback()
    assert taken.exit_code == 0, taken.stderr
    assert "at seq 5 (hash" in taken.stdout
    assert key["key_id"] in taken.stdout
    populate(db_url, 2, first=10)

    verified = cli("audit", "verify", "--public-key", "audit.key.pub")
    assert verified.exit_code == 0, verified.stdout + verified.stderr
    assert "1 signed checkpoint(s) match, the latest at seq 5" in verified.stdout
    assert verified.stderr == ""

    # Rewrite the chain from entry 2 on, every hash recomputed, head updated: only the
    # checkpoint can tell.
    from corral.governance.audit import GENESIS, entry_hash

    sql(db_url, "UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 2")
    previous = GENESIS
    rows = sql(
        db_url,
        "SELECT seq, at, kind, actor, subject, decision, payload_ref FROM audit_log ORDER BY seq",
    )
    for seq, at, kind, actor, subject, decision, payload_ref in rows:
        digest = entry_hash(
            previous, "default", seq, at, kind, actor, subject, decision, payload_ref
        )
        sql(
            db_url,
            "UPDATE audit_log SET prev_hash = ?, hash = ? WHERE seq = ?",
            (previous, digest, seq),
        )
        previous = digest
    sql(db_url, "UPDATE audit_heads SET hash = ?", (previous,))
    # The checkpoint row disagrees even without its key; the key proves the row is genuine.
    assert cli("audit", "verify").exit_code == 1
    caught = cli("audit", "verify", "--public-key", "audit.key.pub")
    assert caught.exit_code == 1
    assert "entry 5 (audit.key_created, " in caught.stdout
    assert f"checkpoint at seq 5 (key {key['key_id']}) does not match the chain" in caught.stdout


def test_checkpoint_refuses_a_tampered_chain(cli: Invoke, db_url: str) -> None:
    populate(db_url)
    assert cli("audit", "keygen", "--out", "audit.key", "--offline").exit_code == 0
    sql(db_url, "UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 3")
    done = cli("audit", "checkpoint", "--key", "audit.key").no_traceback()
    assert done.exit_code == 1
    assert "not signed" in done.stderr
    assert "entry 3" in done.stderr
    assert sql(db_url, "SELECT count(*) FROM audit_checkpoints") == [(0,)]


def test_checkpoint_of_an_empty_log_is_a_note(cli: Invoke) -> None:
    assert cli("audit", "keygen", "--out", "audit.key", "--offline").exit_code == 0
    done = cli("audit", "checkpoint", "--key", "audit.key")
    assert done.exit_code == 0
    assert "nothing to checkpoint" in done.stderr


def test_bad_key_file(cli: Invoke, tmp_path: Path) -> None:
    (tmp_path / "junk.pem").write_text("nope")
    done = cli("audit", "verify", "--public-key", "junk.pem").no_traceback()
    assert done.exit_code == 2
    assert "junk.pem is not a PEM public key" in done.stderr


def test_export_and_verify_it_offline(cli: Invoke, db_url: str, tmp_path: Path) -> None:
    populate(db_url)
    assert cli("audit", "keygen", "--out", "audit.key", "--offline").exit_code == 0
    assert cli("audit", "checkpoint", "--key", "audit.key").exit_code == 0
    done = cli("audit", "export", "--out", "export.jsonl").no_traceback()
    assert done.exit_code == 0, done.stderr
    assert "exported 6 entries and 1 checkpoint(s)" in done.stderr
    lines = (tmp_path / "export.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 1 + 1 + 6 + 1
    assert not (tmp_path / "export.jsonl.partial").exists()

    ok = cli("audit", "verify", "--export", "export.jsonl", "--public-key", "audit.key.pub")
    assert ok.exit_code == 0, ok.stdout
    assert "6 entries verified" in ok.stdout
    streamed = cli("audit", "export").stdout
    assert cli("audit", "verify", "--export", "-", stdin=streamed).exit_code == 0

    entry = json.loads(lines[4])
    entry["actor"] = "human:mallory"
    lines[4] = json.dumps(entry)
    (tmp_path / "tampered.jsonl").write_text("\n".join(lines) + "\n")
    bad = cli("audit", "verify", "--export", "tampered.jsonl", "--public-key", "audit.key.pub")
    assert bad.exit_code == 1
    assert "entry 2 (" in bad.stdout
    assert "hash does not match its fields" in bad.stdout


def test_list_recent_entries(cli: Invoke, db_url: str) -> None:
    populate(db_url)
    shown = cli("audit", "list", "--json").no_traceback()
    assert shown.exit_code == 0, shown.stderr
    entries = shown.json()["entries"]
    assert [e["seq"] for e in entries] == [6, 5, 4, 3, 2, 1]
    # Decisions are redacted for output (CORRAL_REDACT, default email, phone, card).
    assert entries[0]["decision"] == {"status": "approved", "reason": "checked by [redacted:email]"}
    raw = cli("audit", "list", "--json", env={"CORRAL_REDACT": "none"}).json()["entries"]
    assert raw[0]["decision"]["reason"] == "checked by ada6@example.com"

    decided = cli("audit", "list", "--kind", "approval.decided", "--json").json()["entries"]
    assert [e["seq"] for e in decided] == [5, 2]
    approvals = cli("audit", "list", "--kind", "approval.*", "-n", "3", "--json").json()
    assert [e["seq"] for e in approvals["entries"]] == [5, 4, 2]

    table = cli("audit", "list", "--limit", "2")
    assert table.exit_code == 0
    assert "approval.decided" in table.stdout
    assert "human:ada" in table.stdout
    assert "[redacted:email]" in table.stdout
    assert "approval:4" not in table.stdout


def test_list_needs_a_principal_of_the_tenant(cli: Invoke, db_url: str) -> None:
    populate(db_url, 2)
    add_admin(db_url, "ada")
    assert cli("--as", "ada", "audit", "list").exit_code == 0
    refused = cli("--as", "mallory", "audit", "list").no_traceback()
    assert refused.exit_code == 2
    assert "'mallory' is not a principal of tenant 'default'" in refused.stderr


def test_help_has_examples(cli: Invoke) -> None:
    for command in ("verify", "keygen", "checkpoint", "export", "list"):
        done = cli("audit", command, "--help")
        assert done.exit_code == 0
        assert "corral audit" in done.stdout
