"""Signed checkpoints of the audit chain (Ed25519), their keys, and the export of a chain.

A checkpoint is a signed statement "tenant T's chain had entry N with hash H at time t":
Ed25519 over `canonical_json([tenant, seq, hash, at])`. Once one is taken (and its public key is
kept apart from the database), rewriting any entry up to N — even with every later hash
recomputed and the head updated — no longer matches what was signed, and `verify_chain` with the
public key finds it. Take checkpoints periodically (a cron job running `corral audit checkpoint
--key FILE`) and keep exports somewhere the database's administrators cannot write.

A checkpoint is NOT itself an audit entry. An entry would move the head it describes (the
checkpoint of seq N would become entry N+1, never the head it signs), and a verifier needs the
checkpoints before it reads the chain anyway. Checkpoints live in `audit_checkpoints`; a key's
creation through `corral audit keygen` is recorded in the chain as `audit.key_created`.

Before signing, `checkpoint` verifies the chain: a checkpoint of a tampered chain would make the
tampering look genuine, so it refuses (`AuditChainBroken`).

Keys: the private key is a PEM file (PKCS#8, unencrypted, mode 0600); the public key a PEM file
next to it (`FILE.pub`). A key's id is the first 16 hex digits of the sha256 of its raw public
bytes, stored with each checkpoint so a verifier knows which key to check it with.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from corral.errors import AuditChainBroken as AuditChainBroken
from corral.errors import AuditKeyInvalid as AuditKeyInvalid
from corral.errors import AuditLogEmpty as AuditLogEmpty
from corral.governance.audit import GENESIS
from corral.governance.verify import (
    CHECKPOINT_COLUMNS,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    PAGE_SIZE,
    Checkpoint,
    checkpoint_from_row,
    checkpoint_message,
    entries_page,
    read_checkpoints,
    read_head,
    verify_chain,
)
from corral.store import Store
from corral.store.scripts import Script, Statement

# -- keys ---------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """The key's id: the first 16 hex digits of the sha256 of its 32 raw public bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_path(private_path: Path) -> Path:
    """Where `generate_key` writes the public key of the private key at `private_path`."""
    return private_path.with_name(private_path.name + ".pub")


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def generate_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """Create a new Ed25519 key: the private key at `path` (PEM, mode 0600, never overwritten)
    and its public key at `path.pub`; return the public key.

    Raises:
        AuditKeyInvalid: `path` (or `path.pub`) already exists, or cannot be written.
    """
    private_path = Path(path)
    public_path = public_key_path(private_path)
    private_key = Ed25519PrivateKey.generate()
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    for target in (private_path, public_path):
        if target.exists():
            raise AuditKeyInvalid(
                f"{target} already exists; a signing key is never overwritten (choose another "
                "path, or move the old key away first)",
                path=str(target),
            )
    try:
        # O_EXCL: never replace a key; 0600 from the start, so the key is never world-readable.
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as file:
            file.write(private_pem)
        public_path.write_text(public_key_pem(private_key.public_key()))
    except OSError as exc:
        raise AuditKeyInvalid(
            f"cannot write the key to {exc.filename or private_path}: {exc.strerror or exc}",
            path=str(private_path),
        ) from exc
    return private_key.public_key()


def _read_pem(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AuditKeyInvalid(
            f"cannot read the key file {path}: {exc.strerror or exc}", path=str(path)
        ) from exc


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The Ed25519 private key in the PEM file at `path` (as `generate_key` writes it)."""
    file = Path(path)
    try:
        key = serialization.load_pem_private_key(_read_pem(file), password=None)
    except (ValueError, TypeError) as exc:
        raise AuditKeyInvalid(
            f"{file} is not an unencrypted PEM private key ({exc})", path=str(file)
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise AuditKeyInvalid(
            f"{file} holds a {type(key).__name__}, not an Ed25519 private key", path=str(file)
        )
    return key


def load_public_key(path: str | os.PathLike[str]) -> Ed25519PublicKey:
    """The Ed25519 public key in the PEM file at `path` (a private key file works too)."""
    file = Path(path)
    data = _read_pem(file)
    if b"PRIVATE KEY" in data:
        return load_private_key(file).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise AuditKeyInvalid(f"{file} is not a PEM public key ({exc})", path=str(file)) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise AuditKeyInvalid(
            f"{file} holds a {type(key).__name__}, not an Ed25519 public key", path=str(file)
        )
    return key


def keys_by_id(public_keys: list[Ed25519PublicKey]) -> dict[str, Ed25519PublicKey]:
    """`{key_id(k): k}`, the form `verify_chain` and `verify_export` take."""
    return {key_id(key): key for key in public_keys}


# -- checkpoints --------------------------------------------------------------------------------


def store_checkpoint(cp: Checkpoint) -> Script[Checkpoint]:
    """Insert `cp`; if that key already checkpointed that seq, keep and return the earlier one."""
    yield Statement(
        f"INSERT INTO audit_checkpoints ({CHECKPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (tenant, seq, key_id) DO NOTHING",
        (cp.tenant, cp.seq, cp.hash, cp.at, cp.key_id, cp.signature),
    )
    result = yield Statement(
        f"SELECT {CHECKPOINT_COLUMNS} FROM audit_checkpoints"
        " WHERE tenant = ? AND seq = ? AND key_id = ?",
        (cp.tenant, cp.seq, cp.key_id),
    )
    row = result.one()
    assert row is not None
    return checkpoint_from_row(row)


async def checkpoint(
    store: Store, tenant: str, private_key: Ed25519PrivateKey, *, now: float
) -> Checkpoint:
    """Verify `tenant`'s chain, then sign its head and store the checkpoint.

    The head signed is the one verification read first (appends made meanwhile are covered
    by the next checkpoint). Checkpointing a head the key already signed returns that one.

    Raises:
        AuditChainBroken: verification found tampering; nothing is signed.
        AuditLogEmpty: the tenant has no audit entries yet.
    """
    public_key = private_key.public_key()
    signer = key_id(public_key)
    report = await verify_chain(store, tenant, public_keys={signer: public_key})
    if not report.ok:
        seq = report.first_bad.seq if report.first_bad else None
        raise AuditChainBroken(
            f"not signed: {report.describe()}; investigate (corral audit verify) before "
            "taking a checkpoint",
            tenant=tenant,
            seq=seq,
        )
    if report.head_seq == 0:
        raise AuditLogEmpty(
            f"the audit log of tenant {tenant} has no entries yet: nothing to checkpoint",
            tenant=tenant,
        )
    message = checkpoint_message(tenant, report.head_seq, report.head_hash, now)
    signed = Checkpoint(
        tenant=tenant,
        seq=report.head_seq,
        hash=report.head_hash,
        at=float(now),
        key_id=signer,
        signature=private_key.sign(message).hex(),
    )
    return await store.run_script(lambda dialect: store_checkpoint(signed))


# -- export -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSummary:
    """What `export` wrote."""

    tenant: str
    head_seq: int
    entries: int
    checkpoints: int


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


async def export(
    store: Store, tenant: str, out: TextIO, *, now: float | None = None, page_size: int = PAGE_SIZE
) -> ExportSummary:
    """Write `tenant`'s chain to `out` as JSON Lines, for `verify.verify_export` offline.

    Lines, in order: a header (`format`, `version`, `tenant`, `exported_at`, the `head` seq and
    hash), one `key` line per key id that signed a checkpoint, every `checkpoint`, every `entry`
    (its stored fields, `decision` as the exact text that was hashed), and an `end` line with the
    counts. The export is a consistent prefix: the checkpoints are read, then the head, and the
    entries up to that head are written; appends made meanwhile belong to the next export.
    """
    checkpoints = await store.read_script(lambda d: read_checkpoints(tenant))
    head = await store.read_script(lambda d: read_head(tenant)) or (0, GENESIS)
    out.write(
        _line(
            {
                "type": "header",
                "format": EXPORT_FORMAT,
                "version": EXPORT_VERSION,
                "tenant": tenant,
                "exported_at": now,
                "head": {"seq": head[0], "hash": head[1]},
            }
        )
    )
    for signer in sorted({cp.key_id for cp in checkpoints}):
        out.write(_line({"type": "key", "key_id": signer}))
    for cp in checkpoints:
        out.write(_line({"type": "checkpoint", **cp.to_json()}))
    written = 0
    after = 0
    while after < head[0]:
        page = await store.read_script(entries_page(tenant, after, page_size))
        for record in page:
            if record.seq > head[0]:
                break
            out.write(
                _line(
                    {
                        "type": "entry",
                        "tenant": record.tenant,
                        "seq": record.seq,
                        "at": record.at,
                        "kind": record.kind,
                        "actor": record.actor,
                        "subject": record.subject,
                        "decision": record.decision,
                        "payload_ref": record.payload_ref,
                        "prev_hash": record.prev_hash,
                        "hash": record.hash,
                    }
                )
            )
            written += 1
        if len(page) < page_size:
            break
        after = page[-1].seq
    out.write(_line({"type": "end", "entries": written, "checkpoints": len(checkpoints)}))
    return ExportSummary(tenant, head[0], written, len(checkpoints))
