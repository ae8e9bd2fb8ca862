"""The audit log: append-only, one hash chain per tenant, written in the transaction it records.

An entry records a decision — who (`actor`), about what (`subject`), what was decided and why
(`decision`: effect, policy, version, rule, reason; never the payload) — and where the payload
lives (`payload_ref`, e.g. `run:<id>:<seq>`), so prompts and tool arguments can be redacted or
expired without breaking the chain.

Each entry's hash covers the previous entry's hash and every field of the entry:

    hash = sha256(canonical_json([prev_hash, tenant, seq, at, kind, actor, subject, decision,
                                  payload_ref]))

so editing, deleting, inserting or reordering entries breaks a link that `verify` finds; signed
checkpoints of the head (Ed25519) make rewriting the whole chain detectable too.

`append` is a transaction script (`corral.store.scripts`): callers run it inside the script that
makes the change it records (an approval decision, a policy change), so the change and its entry
commit together or not at all. Appends lock the tenant's chain head, so concurrent writers (many
worker processes on PostgreSQL) extend the chain one at a time. A `dedupe_key` makes an append
idempotent: a decision made in a step that is retried after a crash is recorded once.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.store.scripts import Dialect, Script, Statement

GENESIS = "0" * 64
"""The `prev_hash` of a chain's first entry."""


@dataclass(frozen=True)
class AuditEntry:
    """One decision to record. `decision` is a JSON object without payloads."""

    kind: str
    """What happened: `policy.decision`, `approval.requested`, `approval.decided`,
    `approval.expired`, `policy.applied`, `budget.exceeded`, `pause.set`, …"""
    actor: str
    """Who decided: a principal (`human:ada`), an agent (`agent:refunds`), or `corral`."""
    subject: str
    """What it was about: `run:<id>:<seq>`, `approval:<id>`, `policy:<name>@<version>`."""
    decision: dict[str, Any] = field(default_factory=dict)
    payload_ref: str | None = None
    dedupe_key: str | None = None


@dataclass(frozen=True)
class AuditRecord:
    """An entry as stored, with its place in the chain."""

    tenant: str
    seq: int
    at: float
    kind: str
    actor: str
    subject: str
    decision: str
    """The canonical JSON text that was hashed."""
    payload_ref: str | None
    prev_hash: str
    hash: str

    @property
    def decision_data(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.decision)
        return data


AUDIT_COLUMNS = "tenant, seq, at, kind, actor, subject, decision, payload_ref, prev_hash, hash"


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: the same bytes for the same value, for hashing."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(
    prev_hash: str,
    tenant: str,
    seq: int,
    at: float,
    kind: str,
    actor: str,
    subject: str,
    decision: str,
    payload_ref: str | None,
) -> str:
    """The hash of one entry, chained to the previous one."""
    material = canonical_json(
        [prev_hash, tenant, seq, repr(float(at)), kind, actor, subject, decision, payload_ref]
    )
    return hashlib.sha256(material.encode()).hexdigest()


def record_hash(record: AuditRecord) -> str:
    """What `record.hash` must be, given its fields and `prev_hash`."""
    return entry_hash(
        record.prev_hash,
        record.tenant,
        record.seq,
        record.at,
        record.kind,
        record.actor,
        record.subject,
        record.decision,
        record.payload_ref,
    )


def append(tenant: str, entry: AuditEntry, *, at: float, dialect: Dialect) -> Script[int]:
    """Append `entry` to `tenant`'s chain inside the calling script; return its seq.

    With a `dedupe_key` already recorded, nothing is appended and the earlier seq is returned.
    """
    lock = " FOR UPDATE" if dialect == "postgresql" else ""
    locked_head = Statement(f"SELECT seq, hash FROM audit_heads WHERE tenant = ?{lock}", (tenant,))
    head = yield locked_head
    if head.one() is None:
        yield Statement(
            "INSERT INTO audit_heads (tenant, seq, hash) VALUES (?, 0, ?)"
            " ON CONFLICT (tenant) DO NOTHING",
            (tenant, GENESIS),
        )
        head = yield locked_head
    row = head.one()
    assert row is not None
    last_seq, prev_hash = int(row[0]), str(row[1])
    if entry.dedupe_key is not None:
        # Checked under the head's lock: a concurrent append of the same key has committed.
        found = yield Statement(
            "SELECT seq FROM audit_log WHERE tenant = ? AND dedupe_key = ?",
            (tenant, entry.dedupe_key),
        )
        if found.one() is not None:
            return int(found.scalar())
    seq = last_seq + 1
    decision = canonical_json(entry.decision)
    digest = entry_hash(
        prev_hash,
        tenant,
        seq,
        at,
        entry.kind,
        entry.actor,
        entry.subject,
        decision,
        entry.payload_ref,
    )
    yield Statement(
        "INSERT INTO audit_log (tenant, seq, at, kind, actor, subject, decision, payload_ref,"
        " dedupe_key, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            tenant,
            seq,
            at,
            entry.kind,
            entry.actor,
            entry.subject,
            decision,
            entry.payload_ref,
            entry.dedupe_key,
            prev_hash,
            digest,
        ),
    )
    yield Statement(
        "UPDATE audit_heads SET seq = ?, hash = ? WHERE tenant = ?", (seq, digest, tenant)
    )
    return seq


def read_entries(
    tenant: str, *, after_seq: int = 0, limit: int | None = None
) -> Script[list[AuditRecord]]:
    """A tenant's entries in chain order (seq > `after_seq`)."""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant = ? AND seq > ? ORDER BY seq"
    params: tuple[Any, ...] = (tenant, after_seq)
    if limit is not None:
        sql += " LIMIT ?"
        params += (limit,)
    result = yield Statement(sql, params)
    return [record_from_row(row) for row in result.rows]


def entries_between(
    kinds: Sequence[str], since: float, until: float, *, tenant: str | None = None
) -> Script[list[AuditRecord]]:
    """Entries of these `kinds` recorded at `since` <= at <= `until` (of one tenant, or of
    all), oldest first: how `corral.control.events` finds budget alerts."""
    if not kinds:
        return []
    marks = ", ".join("?" for _ in kinds)
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE kind IN ({marks}) AND at >= ? AND at <= ?"
    params: tuple[Any, ...] = (*kinds, since, until)
    if tenant is not None:
        sql += " AND tenant = ?"
        params += (tenant,)
    result = yield Statement(sql + " ORDER BY at, tenant, seq", params)
    return [record_from_row(row) for row in result.rows]


def record_from_row(row: Sequence[Any]) -> AuditRecord:
    """An `audit_log` row (selected as `AUDIT_COLUMNS`) as a record."""
    return AuditRecord(
        tenant=row[0],
        seq=int(row[1]),
        at=float(row[2]),
        kind=row[3],
        actor=row[4],
        subject=row[5],
        decision=row[6],
        payload_ref=row[7],
        prev_hash=row[8],
        hash=row[9],
    )


def tenants() -> Script[list[str]]:
    """Every tenant that has an audit chain."""
    result = yield Statement("SELECT tenant FROM audit_heads ORDER BY tenant")
    return [row[0] for row in result.rows]
