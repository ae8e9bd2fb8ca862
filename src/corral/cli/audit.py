"""`corral audit verify|checkpoint|keygen|export|list`: prove what the audit log says.

The audit log is hash-chained per tenant (`corral.governance.audit`); `verify` checks every
link, the head and the signed checkpoints and names the first bad entry (exit 1). `keygen` makes
an Ed25519 signing key, `checkpoint` signs the chain's head with it (run it periodically, e.g.
from cron), `export` writes the chain as JSON Lines that `verify --export FILE` checks offline.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich import box
from rich.table import Table
from rich.text import Text

from corral.cli.display import compact, console, shorten, when
from corral.cli.exits import fail, print_error, reporting_errors
from corral.cli.session import Settings, run_async
from corral.cli.shapes import decode, dumps, iso
from corral.governance.audit import AuditEntry, AuditRecord, append
from corral.governance.checkpoints import (
    AuditChainBroken,
    AuditLogEmpty,
    ExportSummary,
    checkpoint,
    export,
    generate_key,
    key_id,
    keys_by_id,
    load_private_key,
    load_public_key,
    public_key_path,
)
from corral.governance.identity import Role, authorize
from corral.governance.redaction import Redactor
from corral.governance.verify import (
    Checkpoint,
    VerifyReport,
    recent_entries,
    verify_chain,
    verify_export,
)
from corral.store.scripts import Dialect, Script, ScriptFactory

TAMPERING_FOUND = 1
"""`verify`'s exit code when the chain (or export) fails verification."""

audit_app = typer.Typer(
    name="audit",
    help="The tamper-evident audit log: verify it, sign checkpoints, export it, list entries.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]

VERIFY_EPILOG = """\
Examples:

  corral audit verify

  corral --tenant acme audit verify --public-key /etc/corral/audit.key.pub

  corral audit verify --export acme-2026-11.jsonl --public-key audit.key.pub   # offline

  corral audit verify --json | jq .first_bad

Exit codes: 0 the chain verifies · 1 tampering found (the first bad entry is named) · 2 bad
input (a key file) · 3 database unusable. Without checkpoints signed by a key you give, a chain
rewritten with every hash recomputed cannot be ruled out: the output says so.
"""

KEYGEN_EPILOG = """\
Examples:

  corral audit keygen --out /secure/corral-audit.key

Writes the private key (PEM, mode 0600, never overwritten) and FILE.pub, the public key. Keep
the private key where the database's administrators cannot read it, and the public key with
whoever verifies. The key's creation is recorded in the tenant's audit log (audit.key_created)
unless --offline.
"""

CHECKPOINT_EPILOG = """\
Examples:

  corral audit checkpoint --key /secure/corral-audit.key

  */15 * * * *  corral --tenant acme audit checkpoint --key /secure/corral-audit.key   # cron

Verifies the chain first and refuses (exit 1) to sign a chain that fails. An empty log has
nothing to sign: a note on stderr, exit 0.
"""

EXPORT_EPILOG = """\
Examples:

  corral audit export --out acme-2026-11.jsonl

  corral audit export | gzip > audit.jsonl.gz

JSON Lines: a header with the head, the key ids, every checkpoint, every entry, an end record.
Check it anywhere with `corral audit verify --export FILE --public-key KEY.pub`. Exports are
never redacted: the hashes cover the exact text.
"""

LIST_EPILOG = """\
Examples:

  corral audit list

  corral audit list --kind approval.decided --limit 20

  corral audit list --kind 'policy.*' --json

Decisions are redacted for output as CORRAL_REDACT says (default: email, phone, card).
"""


def _load_keys(paths: list[Path] | None) -> dict[str, Ed25519PublicKey] | None:
    if not paths:
        return None
    with reporting_errors():
        return keys_by_id([load_public_key(path) for path in paths])


def _print_report(report: VerifyReport, json_output: bool) -> None:
    if json_output:
        typer.echo(dumps(report.to_json()))
    else:
        typer.echo(report.describe())
        for warning in report.warnings:
            typer.echo(f"warning: {warning}", err=True)
    if not report.ok:
        raise typer.Exit(TAMPERING_FOUND)


@audit_app.command("verify", epilog=VERIFY_EPILOG)
def verify_command(
    ctx: typer.Context,
    public_keys: Annotated[
        list[Path] | None,
        typer.Option(
            "--public-key",
            "-k",
            metavar="FILE",
            help="A public key (PEM) whose checkpoints' signatures to verify; repeatable.",
            show_default=False,
        ),
    ] = None,
    export_file: Annotated[
        Path | None,
        typer.Option(
            "--export",
            metavar="FILE",
            help="Verify this export (from `corral audit export`; - for stdin), not the database.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Verify the tenant's audit chain: every entry's hash and link, the head, and the signed
    checkpoints; name the first bad entry (exit 1)."""
    settings = Settings.of(ctx)
    keys = _load_keys(public_keys)
    if export_file is not None:
        with reporting_errors():
            report = _verify_file(export_file, keys)
        _print_report(report, json_output)
        return

    if settings.server is not None:
        _verify_remote(settings, keys is not None, json_output)
        return

    async def verify() -> VerifyReport:
        store = settings.open_store(existing=True)
        await store.open()
        try:
            return await verify_chain(store, settings.tenant, public_keys=keys)
        finally:
            await store.close()

    _print_report(run_async(verify), json_output)


def _verify_remote(settings: Settings, with_keys: bool, json_output: bool) -> None:
    """The server verifies the key's tenant's chain (hashes and links; signatures need the
    public key here: verify an export with --export and --public-key for those)."""
    if with_keys:
        fail("--public-key needs the chain here: use --export FILE with it, not --server")
    with reporting_errors(), settings.remote() as remote:
        answer = remote.get("/audit/verify")
    if json_output:  # the API's shape
        typer.echo(dumps(answer))
    else:
        typer.echo(answer["message"])
        for warning in answer["warnings"]:
            typer.echo(f"warning: {warning}", err=True)
    if not answer["ok"]:
        raise typer.Exit(TAMPERING_FOUND)


def _verify_file(path: Path, keys: dict[str, Ed25519PublicKey] | None) -> VerifyReport:
    if str(path) == "-":
        return verify_export(sys.stdin, keys)
    try:
        with path.open(encoding="utf-8") as lines:
            return verify_export(lines, keys)
    except OSError as exc:
        fail(f"cannot read the export {path}: {exc.strerror or exc}")


def _allowed(settings: Settings, role: Role, action: str) -> ScriptFactory[object]:
    """A script refusing (NotAuthorized) a principal without `role` in the tenant."""

    def script(dialect: Dialect) -> Script[object]:
        return (yield from authorize(settings.tenant, settings.principal, role, action=action))

    return script


def _record_key(settings: Settings, signer: str, public_file: Path) -> ScriptFactory[int]:
    entry = AuditEntry(
        kind="audit.key_created",
        actor=f"human:{settings.principal}",
        subject=f"key:{signer}",
        decision={"key_id": signer, "algorithm": "ed25519"},
        dedupe_key=f"audit.key_created:{signer}",
    )

    def script(dialect: Dialect) -> Script[int]:
        yield from authorize(
            settings.tenant, settings.principal, "admin", action="record audit signing keys"
        )
        return (yield from append(settings.tenant, entry, at=time.time(), dialect=dialect))

    return script


@audit_app.command("keygen", epilog=KEYGEN_EPILOG)
def keygen_command(
    ctx: typer.Context,
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="Where to write the private key; the public key goes to FILE.pub.",
            show_default=False,
        ),
    ],
    offline: Annotated[
        bool,
        typer.Option("--offline", help="Do not record the key's creation in the audit log."),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Create an Ed25519 key for signing checkpoints (FILE, mode 0600) and its public key
    (FILE.pub); print the key id."""
    settings = Settings.of(ctx)

    async def create() -> tuple[Ed25519PublicKey, int | None]:
        if offline:
            return generate_key(out), None
        store = settings.open_store()
        await store.open()
        try:
            # Refuse before making a key the log would not record.
            await store.read_script(_allowed(settings, "admin", "record audit signing keys"))
            public = generate_key(out)
            seq = await store.run_script(
                _record_key(settings, key_id(public), public_key_path(out))
            )
            return public, seq
        finally:
            await store.close()

    public, recorded = run_async(create)
    signer = key_id(public)
    public_file = public_key_path(out)
    if json_output:
        typer.echo(
            dumps(
                {
                    "key_id": signer,
                    "private_key": str(out),
                    "public_key": str(public_file),
                    "audit_seq": recorded,
                }
            )
        )
        return
    typer.echo(f"key {signer}: private key {out} (keep it secret), public key {public_file}")
    if recorded is not None:
        typer.echo(f"recorded as entry {recorded} of tenant {settings.tenant}'s audit log")


def _checkpoint_json(cp: Checkpoint) -> dict[str, Any]:
    return {**cp.to_json(), "at": iso(cp.at)}


@audit_app.command("checkpoint", epilog=CHECKPOINT_EPILOG)
def checkpoint_command(
    ctx: typer.Context,
    key: Annotated[
        Path,
        typer.Option(
            "--key",
            "-k",
            metavar="FILE",
            help="The private key (from `corral audit keygen`).",
            show_default=False,
        ),
    ],
    json_output: JsonOption = False,
) -> None:
    """Verify the tenant's audit chain, then sign its head and store the signed checkpoint."""
    settings = Settings.of(ctx)
    with reporting_errors():
        private = load_private_key(key)

    async def take() -> Checkpoint | None:
        store = settings.open_store(existing=True)
        await store.open()
        try:
            await store.read_script(_allowed(settings, "operator", "take audit checkpoints"))
            return await checkpoint(store, settings.tenant, private, now=time.time())
        except AuditLogEmpty as empty:
            print_error(empty.message)
            return None
        except AuditChainBroken as broken:
            print_error(broken.message, code=broken.code)
            raise typer.Exit(TAMPERING_FOUND) from None
        finally:
            await store.close()

    taken = run_async(take)
    if taken is None:
        return
    if json_output:
        typer.echo(dumps(_checkpoint_json(taken)))
        return
    typer.echo(
        f"checkpoint of tenant {taken.tenant} at seq {taken.seq} (hash {taken.hash[:16]}…) "
        f"signed by key {taken.key_id}"
    )


@audit_app.command("export", epilog=EXPORT_EPILOG)
def export_command(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            "-o",
            metavar="FILE",
            help="Write to FILE (default: stdout).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Write the tenant's audit chain, checkpoints and key ids as JSON Lines, for offline
    verification."""
    settings = Settings.of(ctx)

    async def write(stream: TextIO) -> ExportSummary:
        store = settings.open_store(existing=True)
        await store.open()
        try:
            await store.read_script(_allowed(settings, "viewer", "export the audit log"))
            return await export(store, settings.tenant, stream, now=time.time())
        finally:
            await store.close()

    if out is None:
        summary = run_async(lambda: write(sys.stdout))
    else:
        partial = out.with_name(out.name + ".partial")
        try:
            with partial.open("w", encoding="utf-8") as stream:
                summary = run_async(lambda: write(stream))
            partial.replace(out)  # a reader never sees half an export
        except OSError as exc:
            fail(f"cannot write the export to {out}: {exc.strerror or exc}")
        finally:
            partial.unlink(missing_ok=True)
    where = "stdout" if out is None else str(out)
    typer.echo(
        f"exported {summary.entries} entries and {summary.checkpoints} checkpoint(s) of tenant "
        f"{summary.tenant} (head seq {summary.head_seq}) to {where}",
        err=True,
    )


def _entry_json(record: AuditRecord, redactor: Redactor) -> dict[str, Any]:
    return {
        "seq": record.seq,
        "at": iso(record.at),
        "kind": record.kind,
        "actor": record.actor,
        "subject": record.subject,
        "decision": redactor.redact_json(decode(record.decision)),
        "payload_ref": record.payload_ref,
        "hash": record.hash,
    }


def _entries_table(records: list[AuditRecord], redactor: Redactor) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("seq", justify="right", no_wrap=True)
    table.add_column("at", no_wrap=True)
    table.add_column("kind", no_wrap=True)
    table.add_column("actor", overflow="fold")
    table.add_column("subject", overflow="fold")
    table.add_column("decision", overflow="fold")
    for record in records:
        decision = redactor.redact_json(decode(record.decision))
        table.add_row(
            Text(str(record.seq)),
            Text(when(record.at)),
            Text(record.kind),
            Text(record.actor),
            Text(record.subject),
            Text(shorten(compact(decision), 100)),
        )
    return table


@audit_app.command("list", epilog=LIST_EPILOG)
def list_command(
    ctx: typer.Context,
    kind: Annotated[
        str | None,
        typer.Option(
            "--kind",
            metavar="KIND",
            help="Only entries of this kind (approval.decided), or a prefix: 'approval.*'.",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many entries.")
    ] = 50,
    json_output: JsonOption = False,
) -> None:
    """List the tenant's latest audit entries, newest first: seq, time, kind, actor, subject
    and decision."""
    settings = Settings.of(ctx)
    with reporting_errors():
        redactor = Redactor.from_settings()

    async def fetch() -> list[AuditRecord]:
        store = settings.open_store(existing=True)
        await store.open()
        try:
            await store.read_script(_allowed(settings, "viewer", "list the audit log"))
            return await store.read_script(
                lambda d: recent_entries(settings.tenant, kind=kind, limit=limit)
            )
        finally:
            await store.close()

    records = run_async(fetch)
    if json_output:
        entries = [_entry_json(record, redactor) for record in records]
        typer.echo(dumps({"tenant": settings.tenant, "entries": entries}))
        return
    if not records:
        typer.echo(f"no audit entries for tenant {settings.tenant}", err=True)
        return
    console().print(_entries_table(records, redactor))


def register(app: typer.Typer) -> None:
    """Add `corral audit …` to `app`."""
    app.add_typer(audit_app, name="audit")
