"""Signing keys, signed checkpoints of the chain's head, and the export verified offline."""

from __future__ import annotations

import io
import json
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from corral.governance.audit import AuditEntry, append
from corral.governance.checkpoints import (
    AuditChainBroken,
    AuditKeyInvalid,
    AuditLogEmpty,
    checkpoint,
    export,
    generate_key,
    key_id,
    load_private_key,
    load_public_key,
    public_key_path,
)
from corral.governance.verify import VerifyReport, read_checkpoints, verify_chain, verify_export
from corral.store import Store
from corral.store.scripts import Dialect, Script, Statement

TENANT = "acme"


async def add(store: Store, n: int) -> int:
    entry = AuditEntry(
        "approval.decided", "human:ada", f"approval:{n}", {"status": "approved", "n": n}
    )

    def script(dialect: Dialect) -> Script[int]:
        return (yield from append(TENANT, entry, at=1_700_000_000.0 + n, dialect=dialect))

    return await store.run_script(script)


async def build(store: Store, first: int, last: int) -> None:
    for n in range(first, last + 1):
        await add(store, n)


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys" / "audit.key"
    path.parent.mkdir()
    generate_key(path)
    return path


def keys(path: Path) -> dict[str, Ed25519PublicKey]:
    public = load_public_key(public_key_path(path))
    return {key_id(public): public}


# -- keys ---------------------------------------------------------------------------------------


def test_generate_key_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    public = generate_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert public_key_path(path).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    private = load_private_key(path)
    assert key_id(private.public_key()) == key_id(public)
    assert key_id(load_public_key(public_key_path(path))) == key_id(public)
    assert key_id(load_public_key(path)) == key_id(public)  # a private key file works too
    assert len(key_id(public)) == 16
    int(key_id(public), 16)


def test_generate_key_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "audit.key"
    generate_key(path)
    before = path.read_bytes()
    with pytest.raises(AuditKeyInvalid, match="already exists"):
        generate_key(path)
    assert path.read_bytes() == before


def test_bad_key_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(AuditKeyInvalid, match="cannot read the key file"):
        load_private_key(tmp_path / "missing.key")
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key")
    with pytest.raises(AuditKeyInvalid, match=r"junk\.pem"):
        load_public_key(junk)
    with pytest.raises(AuditKeyInvalid, match=r"junk\.pem"):
        load_private_key(junk)


# -- checkpoints --------------------------------------------------------------------------------


async def test_checkpoint_signs_the_head(store: Store, key_file: Path) -> None:
    await build(store, 1, 5)
    taken = await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_100.0)
    assert taken.seq == 5
    assert taken.key_id in keys(key_file)
    assert taken.signed_by(keys(key_file)[taken.key_id])
    stored = await store.read_script(lambda d: read_checkpoints(TENANT))
    assert stored == [taken]
    # The same head again: the checkpoint already taken is returned, nothing added.
    again = await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_200.0)
    assert again == taken
    await build(store, 6, 7)
    later = await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_300.0)
    assert later.seq == 7
    report = await verify_chain(store, TENANT, public_keys=keys(key_file))
    assert report.ok
    assert report.signatures_verified == 2
    assert report.latest_verified_checkpoint == 7
    assert report.warnings == ()


async def test_checkpoint_of_an_empty_log_is_refused(store: Store, key_file: Path) -> None:
    with pytest.raises(AuditLogEmpty, match="no entries"):
        await checkpoint(store, TENANT, load_private_key(key_file), now=1.0)


async def test_checkpoint_refuses_to_sign_a_tampered_chain(store: Store, key_file: Path) -> None:
    await build(store, 1, 5)

    def tamper(dialect: Dialect) -> Script[None]:
        yield Statement("UPDATE audit_log SET actor = 'human:mallory' WHERE seq = 3")

    await store.run_script(tamper)
    with pytest.raises(AuditChainBroken, match="entry 3"):
        await checkpoint(store, TENANT, load_private_key(key_file), now=1.0)
    assert await store.read_script(lambda d: read_checkpoints(TENANT)) == []


async def test_a_checkpoint_by_another_key_is_reported(store: Store, tmp_path: Path) -> None:
    generate_key(tmp_path / "ours.key")
    generate_key(tmp_path / "theirs.key")
    await build(store, 1, 3)
    await checkpoint(store, TENANT, load_private_key(tmp_path / "theirs.key"), now=1.0)
    report = await verify_chain(store, TENANT, public_keys=keys(tmp_path / "ours.key"))
    assert report.ok
    assert report.latest_verified_checkpoint is None
    assert any("not among those given" in warning for warning in report.warnings)


# -- export -------------------------------------------------------------------------------------


async def exported(store: Store) -> list[str]:
    out = io.StringIO()
    await export(store, TENANT, out, now=1_700_000_500.0, page_size=3)
    return out.getvalue().splitlines(keepends=True)


def edit(lines: list[str], kind: str, seq: int, **changes: object) -> list[str]:
    edited = []
    for line in lines:
        item = json.loads(line)
        if item["type"] == kind and item.get("seq") == seq:
            item.update(changes)
            line = json.dumps(item) + "\n"
        edited.append(line)
    return edited


def bad(report: VerifyReport, seq: int | None, reason: str) -> None:
    assert not report.ok, report
    assert report.first_bad is not None
    assert report.first_bad.seq == seq, report.describe()
    assert reason in report.describe()


async def test_export_roundtrip_verifies_offline(store: Store, key_file: Path) -> None:
    await build(store, 1, 4)
    await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_050.0)
    await build(store, 5, 8)
    lines = await exported(store)
    types = [json.loads(line)["type"] for line in lines]
    assert types == ["header", "key", "checkpoint"] + ["entry"] * 8 + ["end"]
    report = verify_export(lines, keys(key_file))
    assert report.ok, report.describe()
    assert report.entries_checked == 8
    assert report.latest_verified_checkpoint == 4
    assert report.tenant == TENANT


async def test_export_of_an_empty_log_verifies(store: Store) -> None:
    report = verify_export(await exported(store))
    assert report.ok
    assert report.entries_checked == 0


async def test_tampered_exports_are_detected(store: Store, key_file: Path) -> None:
    await build(store, 1, 6)
    await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_050.0)
    await build(store, 7, 8)
    lines = await exported(store)
    trusted = keys(key_file)
    assert verify_export(lines, trusted).ok

    bad(verify_export(edit(lines, "entry", 3, actor="human:mallory"), trusted), 3, "hash does")
    bad(verify_export(edit(lines, "entry", 5, at=1.0), trusted), 5, "hash does not match")
    without_5 = [line for line in lines if '"seq":5,' not in line or '"entry"' not in line]
    bad(verify_export(without_5, trusted), 5, "seq gap: 5 missing")
    bad(verify_export(lines[:-2] + lines[-1:], trusted), 8, "head says seq 8")
    bad(verify_export(lines[:-1], trusted), None, "no end record")
    bad(verify_export(lines[1:], trusted), None, "does not start with its header")
    reordered = [*lines[:4], lines[5], lines[4], *lines[6:]]
    bad(verify_export(reordered, trusted), 2, "")
    bad(verify_export([*lines, "{not json\n"], trusted), None, "not an export record")
    forged = edit(lines, "checkpoint", 6, signature="00" * 64)
    bad(verify_export(forged, trusted), 6, "checkpoint signature invalid")
    moved = edit(lines, "checkpoint", 6, hash="c" * 64)
    bad(verify_export(moved, trusted), 6, "checkpoint signature invalid")
    # A checkpoint row edited without a trusted key still disagrees with the chain.
    bad(verify_export(moved), 6, "does not match the chain")


async def test_a_rewritten_chain_in_an_export_fails_its_checkpoint(
    store: Store, key_file: Path
) -> None:
    from corral.governance.audit import GENESIS, entry_hash

    await build(store, 1, 6)
    await checkpoint(store, TENANT, load_private_key(key_file), now=1_700_000_050.0)
    lines = await exported(store)
    rewritten: list[str] = []
    previous = GENESIS
    for line in lines:
        item = json.loads(line)
        if item["type"] == "entry":
            if item["seq"] == 2:
                item["actor"] = "human:mallory"
            item["prev_hash"] = previous
            item["hash"] = previous = entry_hash(
                previous,
                item["tenant"],
                item["seq"],
                item["at"],
                item["kind"],
                item["actor"],
                item["subject"],
                item["decision"],
                item["payload_ref"],
            )
        if item["type"] == "header":
            item["head"]["hash"] = None  # fixed below, once the new head hash is known
        rewritten.append(json.dumps(item) + "\n")
    header = json.loads(rewritten[0])
    header["head"]["hash"] = previous
    rewritten[0] = json.dumps(header) + "\n"
    bad(verify_export(rewritten, keys(key_file)), 6, "checkpoint at seq 6")
