"""Verifying an audit chain: every link, the head, and the signed checkpoints of the head.

`verify_chain` reads a tenant's chain from the store and names the first bad entry;
`verify_export` does the same offline for the JSON Lines file `checkpoints.export` writes. Both
feed the same `ChainChecker`, which sees entries one at a time in seq order, so a long log is
never loaded at once.

What is detected, and how:

- an edited field (kind, actor, subject, decision, payload_ref, at, prev_hash or hash): the
  entry's hash no longer matches its fields (`record_hash`);
- an edited entry whose own hash was recomputed: the next entry's `prev_hash` no longer links;
- a deleted entry: a gap in the seqs; the deleted last entry: the head (`audit_heads`, written
  in the same transaction as every append) names a seq and hash the chain no longer ends with;
- an inserted entry: beyond the head, or a seq that shifts every later entry's hash;
- reordered entries (swapped seqs): the seq is hashed, so both entries' hashes break;
- a chain rewritten with every hash recomputed (and the head updated): only a signed checkpoint
  taken before the rewrite catches it, since its signed (tenant, seq, hash) no longer matches.
  Without checkpoints (or without the public keys to check their signatures) the report says so.

Concurrent appends never cause a false positive: the checkpoints are read first, then the head,
and only the entries up to that head are checked. Entries are append-only and commit with the
head, so everything up to the head read is already in place; later appends are ignored.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.governance.audit import (
    AUDIT_COLUMNS,
    GENESIS,
    AuditRecord,
    canonical_json,
    read_entries,
    record_from_row,
    record_hash,
)
from corral.store import Store
from corral.store.scripts import Dialect, Script, ScriptFactory, Statement

PAGE_SIZE = 1000
"""Entries read per query while verifying."""

EXPORT_FORMAT = "corral-audit-export"
EXPORT_VERSION = 1


@dataclass(frozen=True)
class Checkpoint:
    """A signed statement that `tenant`'s chain had entry `seq` with `hash` at time `at`."""

    tenant: str
    seq: int
    hash: str
    at: float
    key_id: str
    signature: str
    """The Ed25519 signature of `checkpoint_message(...)`, hex."""

    @property
    def message(self) -> bytes:
        return checkpoint_message(self.tenant, self.seq, self.hash, self.at)

    def signed_by(self, public_key: Ed25519PublicKey) -> bool:
        """Whether `public_key` made this checkpoint's signature."""
        try:
            public_key.verify(bytes.fromhex(self.signature), self.message)
        except (InvalidSignature, ValueError):
            return False
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "seq": self.seq,
            "hash": self.hash,
            "at": self.at,
            "key_id": self.key_id,
            "signature": self.signature,
        }


def checkpoint_message(tenant: str, seq: int, head_hash: str, at: float) -> bytes:
    """The exact bytes a checkpoint signs."""
    return canonical_json([tenant, seq, head_hash, float(at)]).encode()


CHECKPOINT_COLUMNS = "tenant, seq, hash, at, key_id, signature"


def checkpoint_from_row(row: Sequence[Any]) -> Checkpoint:
    return Checkpoint(
        tenant=row[0],
        seq=int(row[1]),
        hash=row[2],
        at=float(row[3]),
        key_id=row[4],
        signature=row[5],
    )


def read_checkpoints(tenant: str) -> Script[list[Checkpoint]]:
    """A tenant's checkpoints, oldest first."""
    result = yield Statement(
        f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints WHERE tenant = ? ORDER BY seq, key_id",
        (tenant,),
    )
    return [checkpoint_from_row(row) for row in result.rows]


def read_head(tenant: str) -> Script[tuple[int, str] | None]:
    """The (seq, hash) the tenant's head row says the chain ends with, or None."""
    result = yield Statement("SELECT seq, hash FROM audit_heads WHERE tenant = ?", (tenant,))
    row = result.one()
    return None if row is None else (int(row[0]), str(row[1]))


def read_bounds(tenant: str) -> Script[tuple[int | None, int | None, tuple[int, str] | None]]:
    """The lowest and highest seq stored, then the head: read in that order, so that an entry
    appended legitimately is always covered by the head read after it."""
    result = yield Statement("SELECT min(seq), max(seq) FROM audit_log WHERE tenant = ?", (tenant,))
    row = result.one()
    low = None if row is None or row[0] is None else int(row[0])
    high = None if row is None or row[1] is None else int(row[1])
    head = yield from read_head(tenant)
    return low, high, head


def recent_entries(
    tenant: str, *, kind: str | None = None, limit: int = 50
) -> Script[list[AuditRecord]]:
    """A tenant's latest entries, newest first; `kind` is exact, or a prefix ending in `*`
    (`approval.*`)."""
    sql = f"SELECT {AUDIT_COLUMNS} FROM audit_log WHERE tenant = ?"
    params: list[Any] = [tenant]
    if kind is not None and kind.endswith("*"):
        sql += " AND substr(kind, 1, ?) = ?"
        params += [len(kind) - 1, kind[:-1]]
    elif kind is not None:
        sql += " AND kind = ?"
        params.append(kind)
    result = yield Statement(sql + " ORDER BY seq DESC LIMIT ?", (*params, limit))
    return [record_from_row(row) for row in result.rows]


def entries_page(tenant: str, after_seq: int, limit: int) -> ScriptFactory[list[AuditRecord]]:
    """A script factory reading the next `limit` entries after `after_seq`."""

    def factory(dialect: Dialect) -> Script[list[AuditRecord]]:
        return read_entries(tenant, after_seq=after_seq, limit=limit)

    return factory


@dataclass(frozen=True)
class Problem:
    """The first thing found wrong: at which seq, and what."""

    seq: int | None
    """The entry the problem is about (None: the export file as a whole)."""
    reason: str
    kind: str | None = None
    """The entry's kind and time, when the entry is there to be named."""
    at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "reason": self.reason, "kind": self.kind, "at": _iso(self.at)}


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of verifying one tenant's chain."""

    tenant: str
    ok: bool
    entries_checked: int
    head_seq: int
    """The last seq of the prefix that was checked (the head read at the start)."""
    head_hash: str
    first_bad: Problem | None = None
    checkpoints_checked: int = 0
    """Checkpoints whose (seq, hash) was compared with the chain."""
    signatures_verified: int = 0
    """Checkpoints whose signature was verified with a public key given."""
    latest_verified_checkpoint: int | None = None
    """The seq of the latest checkpoint matching the chain with a verified signature: up to it,
    even a chain rewritten with recomputed hashes would have been detected."""
    warnings: tuple[str, ...] = ()

    def describe(self) -> str:
        """One sentence for people: the first bad entry, or what was verified."""
        where = f"audit log of tenant {self.tenant}"
        if self.first_bad is not None:
            bad = self.first_bad
            if bad.seq is None:
                return f"{where}: {bad.reason}"
            named = f"entry {bad.seq}"
            details = [part for part in (bad.kind, _iso(bad.at)) if part]
            if details:
                named += f" ({', '.join(details)})"
            return f"{where}: {named}: {bad.reason}"
        if self.entries_checked == 0:
            return f"{where}: empty, nothing to verify"
        text = f"{where}: {self.entries_checked} entries verified (seq 1–{self.head_seq})"
        if self.latest_verified_checkpoint is not None:
            text += (
                f"; {self.signatures_verified} signed checkpoint(s) match, the latest at seq "
                f"{self.latest_verified_checkpoint}"
            )
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant,
            "ok": self.ok,
            "entries_checked": self.entries_checked,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "first_bad": None if self.first_bad is None else self.first_bad.to_json(),
            "checkpoints_checked": self.checkpoints_checked,
            "signatures_verified": self.signatures_verified,
            "latest_verified_checkpoint": self.latest_verified_checkpoint,
            "warnings": list(self.warnings),
            "message": self.describe(),
        }


@dataclass
class ChainChecker:
    """Checks one tenant's entries, fed in seq order, against each other, the head and the
    checkpoints; stops at the first problem. `report()` says what was found."""

    tenant: str
    head: tuple[int, str]
    """The (seq, hash) the chain must end with."""
    checkpoints: Sequence[Checkpoint] = ()
    public_keys: Mapping[str, Ed25519PublicKey] | None = None
    expected_seq: int = 1
    prev_hash: str = GENESIS
    entries_checked: int = 0
    chain_problem: Problem | None = None
    other_problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    _by_seq: dict[int, list[Checkpoint]] = field(default_factory=dict)
    _trusted: set[tuple[int, str]] = field(default_factory=set)
    _matched: set[tuple[int, str]] = field(default_factory=set)
    _forged: set[tuple[int, str]] = field(default_factory=set)

    def __post_init__(self) -> None:
        unknown: set[str] = set()
        for cp in self.checkpoints:
            self._by_seq.setdefault(cp.seq, []).append(cp)
            if cp.tenant != self.tenant:
                reason = f"checkpoint at seq {cp.seq} (key {cp.key_id}) is for tenant {cp.tenant!r}"
                self.other_problems.append(Problem(cp.seq, reason))
                continue
            if self.public_keys is None:
                continue
            key = self.public_keys.get(cp.key_id)
            if key is None:
                unknown.add(cp.key_id)
            elif cp.signed_by(key):
                self._trusted.add((cp.seq, cp.key_id))
            else:
                reason = (
                    f"checkpoint at seq {cp.seq} (key {cp.key_id}): checkpoint signature invalid"
                )
                self.other_problems.append(Problem(cp.seq, reason))
                self._forged.add((cp.seq, cp.key_id))
        if not self.checkpoints:
            self.warnings.append(
                "no signed checkpoints: a chain rewritten with recomputed hashes cannot be "
                "ruled out without one (take them with `corral audit checkpoint --key FILE`)"
            )
        elif self.public_keys is None:
            self.warnings.append(
                f"{len(self.checkpoints)} checkpoint(s) compared with the chain, but their "
                "signatures were not checked: give the public key(s) (--public-key FILE)"
            )
        if unknown:
            self.warnings.append(
                "checkpoint(s) signed by key(s) not among those given, signatures not checked: "
                + ", ".join(sorted(unknown))
            )

    @property
    def done(self) -> bool:
        """True once a problem was found or the head's seq was reached."""
        return self.chain_problem is not None or self.expected_seq > self.head[0]

    def feed(self, record: AuditRecord) -> bool:
        """Check the next entry; False once a problem was found (feed no more)."""
        if self.chain_problem is not None:
            return False
        problem = self._check(record)
        if problem is not None:
            self.chain_problem = problem
            return False
        self.entries_checked += 1
        self.expected_seq = record.seq + 1
        self.prev_hash = record.hash
        return True

    def _check(self, record: AuditRecord) -> Problem | None:
        seq = record.seq
        if seq > self.head[0]:
            return Problem(
                seq,
                f"entry beyond the head (the head says seq {self.head[0]}): inserted?",
                record.kind,
                record.at,
            )
        if seq > self.expected_seq:
            return Problem(self.expected_seq, f"seq gap: {self.expected_seq} missing (deleted?)")
        if seq < self.expected_seq:
            return Problem(
                seq,
                f"seq {seq} out of order (expected {self.expected_seq}): inserted or reordered?",
                record.kind,
                record.at,
            )
        if record.tenant != self.tenant:
            return Problem(seq, f"belongs to tenant {record.tenant!r}", record.kind, record.at)
        if record_hash(record) != record.hash:
            return Problem(seq, "hash does not match its fields", record.kind, record.at)
        if record.prev_hash != self.prev_hash:
            linked = f"entry {seq - 1}" if seq > 1 else "the chain's start"
            return Problem(seq, f"prev_hash does not link to {linked}", record.kind, record.at)
        for cp in self._by_seq.get(seq, ()):
            if (cp.seq, cp.key_id) in self._forged:
                continue  # reported as a bad signature: what it claims is worthless
            if cp.hash != record.hash:
                return Problem(
                    seq,
                    f"checkpoint at seq {seq} (key {cp.key_id}) does not match the chain",
                    record.kind,
                    record.at,
                )
            self._matched.add((cp.seq, cp.key_id))
        return None

    def finish(self) -> VerifyReport:
        """The report, once every entry up to the head was fed (or a problem found)."""
        problems: list[Problem] = []
        head_seq, head_hash = self.head
        if self.chain_problem is not None:
            problems.append(self.chain_problem)
        elif self.expected_seq - 1 != head_seq or self.prev_hash != head_hash:
            problems.append(
                Problem(
                    head_seq,
                    f"head says seq {head_seq} hash {head_hash[:16]}… but the last entry "
                    f"differs (seq {self.expected_seq - 1}): deleted?",
                )
            )
        problems += self.other_problems
        for cp in self.checkpoints:
            if cp.seq > head_seq and cp.tenant == self.tenant:
                problems.append(
                    Problem(
                        cp.seq,
                        f"checkpoint at seq {cp.seq} (key {cp.key_id}) does not match the chain "
                        f"(the chain ends at seq {head_seq}): entries deleted?",
                    )
                )
        # The lowest seq is the first bad entry; at equal seqs, the entry's own problem first.
        problems.sort(key=lambda p: p.seq if p.seq is not None else -1)
        first_bad = problems[0] if problems else None
        trusted = self._trusted & self._matched
        return VerifyReport(
            tenant=self.tenant,
            ok=first_bad is None,
            entries_checked=self.entries_checked,
            head_seq=head_seq,
            head_hash=head_hash,
            first_bad=first_bad,
            checkpoints_checked=len(self._matched),
            signatures_verified=len(trusted),
            latest_verified_checkpoint=max((seq for seq, _ in trusted), default=None),
            warnings=tuple(self.warnings),
        )


async def verify_chain(
    store: Store,
    tenant: str,
    *,
    public_keys: Mapping[str, Ed25519PublicKey] | None = None,
    page_size: int = PAGE_SIZE,
) -> VerifyReport:
    """Verify `tenant`'s audit chain in the store; the report names the first bad entry.

    Args:
        store: An open store.
        tenant: Whose chain.
        public_keys: Ed25519 public keys by key id (`checkpoints.key_id`): checkpoints signed by
            them have their signatures verified. Without keys, checkpoints are still compared
            with the chain, but a forged checkpoint could not be told apart.
        page_size: Entries read per query.
    """
    # Checkpoints before the head: a checkpoint is taken of a head, and heads only grow, so
    # every genuine checkpoint read here is at or below the head read next.
    checkpoints = await store.read_script(lambda d: read_checkpoints(tenant))
    head = await store.read_script(lambda d: read_head(tenant))
    checker = ChainChecker(
        tenant, head or (0, GENESIS), checkpoints=checkpoints, public_keys=public_keys
    )
    while not checker.done:
        after = checker.expected_seq - 1
        page = await store.read_script(entries_page(tenant, after, page_size))
        for record in page:
            if record.seq > checker.head[0] or not checker.feed(record):
                break
        if len(page) < page_size or page[-1].seq > checker.head[0]:
            break
    report = checker.finish()
    if report.first_bad is not None:
        return report
    low, high, head_now = await store.read_script(lambda d: read_bounds(tenant))
    problem: Problem | None = None
    if low is not None and low < 1:
        problem = Problem(low, "entry before the chain's start (seq < 1): inserted?")
    elif high is not None and head_now is None:
        problem = Problem(high, "the chain has entries but no head row (deleted?)")
    elif high is not None and head_now is not None and high > head_now[0]:
        problem = Problem(
            high, f"entry beyond the head (the head says seq {head_now[0]}): inserted?"
        )
    if problem is None:
        return report
    return _failed(report, problem)


def _failed(report: VerifyReport, problem: Problem) -> VerifyReport:
    return VerifyReport(
        tenant=report.tenant,
        ok=False,
        entries_checked=report.entries_checked,
        head_seq=report.head_seq,
        head_hash=report.head_hash,
        first_bad=problem,
        checkpoints_checked=report.checkpoints_checked,
        signatures_verified=report.signatures_verified,
        latest_verified_checkpoint=report.latest_verified_checkpoint,
        warnings=report.warnings,
    )


def verify_export(
    lines: Iterable[str], public_keys: Mapping[str, Ed25519PublicKey] | None = None
) -> VerifyReport:
    """Verify an export (`checkpoints.export`) offline, with no database: every entry's hash and
    link, the head it declares, its checkpoints and their signatures, and its line counts.

    Args:
        lines: The export's lines (an open text file works).
        public_keys: Trusted Ed25519 public keys by key id; the export's own list of key ids
            is only informative, trust comes from the keys given here.
    """
    header: dict[str, Any] | None = None
    checker: ChainChecker | None = None
    checkpoints: list[Checkpoint] = []
    counted = {"entry": 0, "checkpoint": 0}
    end: dict[str, Any] | None = None
    tenant = "?"

    def broken(reason: str) -> VerifyReport:
        """A failed report naming what is wrong with the file itself."""
        if checker is None:
            report = VerifyReport(
                tenant=tenant, ok=True, entries_checked=0, head_seq=0, head_hash=GENESIS
            )
        else:
            report = checker.finish()
        return _failed(report, Problem(None, reason))

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            kind = item["type"]
        except (ValueError, TypeError, KeyError):
            return broken(f"line {number} of the export is not an export record")
        if end is not None:
            return broken(f"line {number}: records after the end record")
        try:
            if kind == "header":
                if header is not None or item.get("format") != EXPORT_FORMAT:
                    return broken(f"line {number}: unexpected header")
                if item.get("version") != EXPORT_VERSION:
                    version = item.get("version")
                    return broken(f"line {number}: export version {version!r} is not supported")
                header = item
                tenant = str(item["tenant"])
                continue
            if header is None:
                return broken(f"line {number}: the export does not start with its header")
            if kind == "key":
                continue
            if kind == "checkpoint":
                if checker is not None:
                    return broken(f"line {number}: checkpoint after the entries")
                checkpoints.append(
                    Checkpoint(
                        tenant=str(item["tenant"]),
                        seq=int(item["seq"]),
                        hash=str(item["hash"]),
                        at=float(item["at"]),
                        key_id=str(item["key_id"]),
                        signature=str(item["signature"]),
                    )
                )
                counted["checkpoint"] += 1
                continue
            if kind == "entry":
                if checker is None:
                    head = header["head"]
                    checker = ChainChecker(
                        tenant,
                        (int(head["seq"]), str(head["hash"])),
                        checkpoints=checkpoints,
                        public_keys=public_keys,
                    )
                counted["entry"] += 1
                record = AuditRecord(
                    tenant=str(item["tenant"]),
                    seq=int(item["seq"]),
                    at=float(item["at"]),
                    kind=str(item["kind"]),
                    actor=str(item["actor"]),
                    subject=str(item["subject"]),
                    decision=str(item["decision"]),
                    payload_ref=None if item["payload_ref"] is None else str(item["payload_ref"]),
                    prev_hash=str(item["prev_hash"]),
                    hash=str(item["hash"]),
                )
                if not checker.feed(record):
                    return checker.finish()
                continue
            if kind == "end":
                end = item
                continue
        except (KeyError, TypeError, ValueError) as exc:
            return broken(f"line {number}: a {kind} record with a missing or bad field ({exc})")
        return broken(f"line {number}: unknown record type {kind!r}")
    if header is None:
        return broken("the export has no header")
    if checker is None:
        head = header["head"]
        checker = ChainChecker(
            tenant,
            (int(head["seq"]), str(head["hash"])),
            checkpoints=checkpoints,
            public_keys=public_keys,
        )
    report = checker.finish()
    if report.first_bad is not None:
        return report
    if end is None:
        return broken("the export has no end record (truncated?)")
    if end.get("entries") != counted["entry"] or end.get("checkpoints") != counted["checkpoint"]:
        return broken(
            f"the end record counts {end.get('entries')} entries and {end.get('checkpoints')} "
            f"checkpoints, the export has {counted['entry']} and {counted['checkpoint']}"
        )
    return report


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
