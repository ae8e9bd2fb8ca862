"""`corral retention set|list|remove|apply`: how long finished runs keep their payloads.

The rules and the walk over old runs are `corral.observe.retention`; this module joins them to
governance, which observability may not import: who may change and apply rules
(`identity.authorize`), the redaction of a run (`governance.retention.redact_run`), and the audit
entries that record every rule change and every batch of runs changed, each in the transaction
of the change it records.
"""

from __future__ import annotations

from typing import Annotated, Any, cast

import typer
from rich import box
from rich.table import Table

from corral.cli.display import console, when
from corral.cli.exits import reporting_errors
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, iso
from corral.governance.audit import AuditEntry, append
from corral.governance.identity import Role, authorize
from corral.governance.redaction import Redactor
from corral.governance.retention import redact_run
from corral.observe.retention import (
    ACTIONS,
    BATCH_SIZE,
    FLOOR_SETTING,
    RetentionAction,
    RetentionBatch,
    RetentionReport,
    RetentionRule,
    apply_retention,
    floor_days,
    list_rules,
    remove_rule,
    set_rule,
)
from corral.store import Store
from corral.store.scripts import Dialect, Script

retention_app = typer.Typer(
    name="retention",
    help="How long finished runs keep their payloads: rules per tenant and workflow, applied "
    "on demand (expire or redact; the audit log and the runs' skeleton stay).",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

SET_EPILOG = f"""\
Examples:

  corral retention set --days 365                          # every workflow of the tenant

  corral retention set --days 200 --workflow refunds

  corral retention set --days 30 --action redact           # personal data out after 30 days

**expire** replaces a finished run's payloads (input, result, errors' messages, step results
and details) once it finished DAYS days ago; ids, names, statuses, timings, error codes, token
usage and policy decisions stay. It is refused below the retention floor ({FLOOR_SETTING},
default 180 days: logs are kept at least six months, EU AI Act Art. 19 and 26(6)). **redact**
removes emails, phone numbers and card numbers (CORRAL_REDACT) and may come sooner. A workflow's
own rule wins over the tenant-wide one for the same action. Nothing changes until `corral
retention apply`. Needs the admin role; every change is in the audit log.
"""

APPLY_EPILOG = """\
Examples:

  corral retention apply --dry-run           # what would change

  corral retention apply

  corral retention apply --json | jq '.rules[] | {workflow, action, runs}'

Walks the tenant's finished runs older than each rule's cut-off, oldest first, a batch of runs
per transaction, each batch recorded in the audit log (`retention.applied`). Also prunes what
runs no longer need once finished (consumed signals, settled budget reservations) and, beyond
the floor, breaker history and daily budget counters. Run it daily (cron, a schedule): each
rule remembers how far it got. Needs the operator role. Cannot be undone.
"""

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
WorkflowOption = Annotated[
    str | None,
    typer.Option(
        "--workflow",
        "-w",
        metavar="NAME",
        help="The workflow the rule is for (as in `corral runs list --workflow`); default: "
        "every workflow without a rule of its own.",
        show_default=False,
    ),
]


def _check_action(value: str) -> str:
    if value not in ACTIONS:
        raise typer.BadParameter(f"unknown action {value!r}; use {' or '.join(ACTIONS)}")
    return value


ActionOption = Annotated[
    str,
    typer.Option(
        "--action",
        "-a",
        metavar="ACTION",
        callback=_check_action,
        help="expire (replace the payloads) or redact (remove personal data from them).",
    ),
]


@retention_app.command("set", epilog=SET_EPILOG)
def set_command(
    ctx: typer.Context,
    days: Annotated[
        int,
        typer.Option(
            "--days",
            "-d",
            metavar="N",
            min=0,
            help="Act on runs that finished more than N days ago.",
            show_default=False,
        ),
    ],
    workflow: WorkflowOption = None,
    action: ActionOption = "expire",
    json_output: JsonOption = False,
) -> None:
    """Set (or replace) a retention rule of the tenant."""
    settings = Settings.of(ctx)
    floor = _floor()

    async def save() -> RetentionRule:
        async with settings.corral(existing=True) as corral:
            rule = RetentionRule(
                tenant=settings.tenant,
                workflow=workflow,
                action=cast(RetentionAction, action),
                days=days,
                updated_at=corral.clock.now(),
                updated_by=settings.principal,
            )

            def script(dialect: Dialect) -> Script[RetentionRule]:
                yield from _authorized(settings, "admin", "set retention rules")
                saved = yield from set_rule(rule, floor=floor)
                yield from _audit(
                    settings,
                    "retention.rule_set",
                    saved,
                    {"days": saved.days, "floor_days": floor},
                    at=rule.updated_at,
                    dialect=dialect,
                )
                return saved

            return await corral.store.run_script(script)

    saved = run_async(save)
    if json_output:
        typer.echo(dumps(_rule_json(saved, floor)))
        return
    typer.echo(
        f"retention of tenant {saved.tenant}: {saved.action} the payloads of "
        f"{_scope_words(saved)} {saved.days} day(s) after they finish "
        "(applied by `corral retention apply`)"
    )


@retention_app.command(
    "list", epilog="Examples:\n\n  corral retention list\n\n  corral retention list --json"
)
def list_command(ctx: typer.Context, json_output: JsonOption = False) -> None:
    """The tenant's retention rules, and the retention floor."""
    settings = Settings.of(ctx)
    floor = _floor()

    async def read() -> list[RetentionRule]:
        async with settings.corral(existing=True) as corral:
            store = corral.store
            await store.read_script(
                lambda d: _authorized(settings, "viewer", "see retention rules")
            )
            return await store.read_script(lambda d: list_rules(settings.tenant))

    rules = run_async(read)
    if json_output:
        typer.echo(
            dumps({"floor_days": floor, "rules": [_rule_json(rule, floor) for rule in rules]})
        )
        return
    if not rules:
        typer.echo(
            f"no retention rules in tenant {settings.tenant}: payloads are kept forever "
            f"(floor {floor} days)",
            err=True,
        )
        return
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("workflow", "action", "days", "updated", "by"):
        table.add_column(column, no_wrap=column != "workflow", overflow="fold")
    for rule in rules:
        days = str(rule.days)
        if rule.effective_days(floor) > rule.days:
            days += f" (floor: {floor})"
        table.add_row(rule.scope, rule.action, days, when(rule.updated_at), rule.updated_by)
    console().print(table)
    typer.echo(f"retention floor: {floor} days ({FLOOR_SETTING})")


@retention_app.command(
    "remove",
    epilog="Examples:\n\n  corral retention remove --workflow refunds\n\n"
    "  corral retention remove --action redact",
)
def remove_command(
    ctx: typer.Context, workflow: WorkflowOption = None, action: ActionOption = "expire"
) -> None:
    """Remove a retention rule (admin role): the runs it covered keep their payloads from now
    on (or fall under the tenant-wide rule)."""
    settings = Settings.of(ctx)

    async def remove() -> bool:
        async with settings.corral(existing=True) as corral:
            now = corral.clock.now()

            def script(dialect: Dialect) -> Script[bool]:
                yield from _authorized(settings, "admin", "remove retention rules")
                removed = yield from remove_rule(
                    settings.tenant, workflow=workflow, action=cast(RetentionAction, action)
                )
                if removed:
                    rule = RetentionRule(
                        tenant=settings.tenant,
                        workflow=workflow,
                        action=cast(RetentionAction, action),
                        days=0,
                        updated_at=now,
                        updated_by=settings.principal,
                    )
                    yield from _audit(
                        settings, "retention.rule_removed", rule, {}, at=now, dialect=dialect
                    )
                return removed

            return await corral.store.run_script(script)

    scope = f"workflow {workflow}" if workflow else "every workflow (*)"
    if not run_async(remove):
        typer.echo(f"no {action} rule for {scope} in tenant {settings.tenant}", err=True)
        raise typer.Exit(2)
    typer.echo(f"removed the {action} rule for {scope}")


@retention_app.command("apply", epilog=APPLY_EPILOG)
def apply_command(
    ctx: typer.Context,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count what would change; change nothing.")
    ] = False,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", metavar="N", min=1, help="Runs changed per transaction."),
    ] = BATCH_SIZE,
    json_output: JsonOption = False,
) -> None:
    """Apply the tenant's retention rules to its finished runs (operator role)."""
    settings = Settings.of(ctx)
    floor = _floor()

    async def apply() -> RetentionReport:
        async with settings.corral(existing=True) as corral:
            store = corral.store
            await store.read_script(
                lambda d: _authorized(settings, "operator", "apply retention rules")
            )
            return await apply_audited(
                store,
                settings.tenant,
                actor=f"human:{settings.principal}",
                now=corral.clock.now(),
                floor=floor,
                dry_run=dry_run,
                batch_size=batch_size,
            )

    report = run_async(apply)
    if json_output:
        typer.echo(dumps(report.to_json()))
        return
    for line in _report_lines(report):
        typer.echo(line)


async def apply_audited(
    store: Store,
    tenant: str,
    *,
    actor: str,
    now: float,
    floor: int | None = None,
    dry_run: bool = False,
    batch_size: int = BATCH_SIZE,
    redactor: Redactor | None = None,
) -> RetentionReport:
    """`apply_retention` with governance joined in: redact rules use `redact_run` (with
    `redactor`, default `Redactor.from_settings()`), and every batch appends a
    `retention.applied` entry to the tenant's audit log in the batch's transaction."""
    chosen = Redactor.from_settings() if redactor is None else redactor

    def redact(run_id: str, dialect: Dialect) -> Script[int]:
        return redact_run(run_id, chosen, actor=actor, now=now, dialect=dialect)

    def record(batch: RetentionBatch, dialect: Dialect) -> Script[int]:
        return append(tenant, batch_entry(batch, actor=actor), at=batch.at, dialect=dialect)

    return await apply_retention(
        store,
        tenant,
        now=now,
        floor=floor,
        dry_run=dry_run,
        batch_size=batch_size,
        redact=redact,
        record=record,
    )


def batch_entry(batch: RetentionBatch, *, actor: str) -> AuditEntry:
    """The audit entry of one batch: which runs, under which rule; never a payload."""
    decision: dict[str, Any] = {"cutoff": iso(batch.cutoff), "pruned": dict(batch.pruned)}
    if batch.rule is None:
        return AuditEntry(
            kind="retention.applied", actor=actor, subject="retention:history", decision=decision
        )
    rule = batch.rule
    decision |= {
        "action": rule.action,
        "days": rule.days,
        "runs": list(batch.run_ids),
        "payloads_changed": batch.payloads_changed,
    }
    return AuditEntry(
        kind="retention.applied",
        actor=actor,
        subject=f"retention:{rule.scope}:{rule.action}",
        decision=decision,
    )


def _authorized(settings: Settings, role: Role, action: str) -> Script[object]:
    return (yield from authorize(settings.tenant, settings.principal, role, action=action))


def _audit(
    settings: Settings,
    kind: str,
    rule: RetentionRule,
    decision: dict[str, Any],
    *,
    at: float,
    dialect: Dialect,
) -> Script[int]:
    entry = AuditEntry(
        kind=kind,
        actor=f"human:{settings.principal}",
        subject=f"retention:{rule.scope}:{rule.action}",
        decision={"workflow": rule.scope, "action": rule.action, **decision},
    )
    return (yield from append(settings.tenant, entry, at=at, dialect=dialect))


def _floor() -> int:
    with reporting_errors():
        return floor_days()


def _scope_words(rule: RetentionRule) -> str:
    if rule.workflow is None:
        return "runs of every workflow without a rule of its own"
    return f"runs of workflow {rule.workflow}"


def _rule_json(rule: RetentionRule, floor: int) -> dict[str, Any]:
    return {
        "tenant": rule.tenant,
        "workflow": rule.workflow,
        "action": rule.action,
        "days": rule.days,
        "effective_days": rule.effective_days(floor),
        "updated_at": iso(rule.updated_at),
        "updated_by": rule.updated_by,
    }


def _report_lines(report: RetentionReport) -> list[str]:
    lines = []
    if not report.rules:
        lines.append(f"no retention rules in tenant {report.tenant}: no run changed")
    for outcome in report.rules:
        rule = outcome.rule
        head = (
            f"{rule.action} {rule.scope} after {rule.effective_days(report.floor_days)} day(s)"
            f" (finished before {iso(outcome.cutoff)})"
        )
        if report.dry_run:
            lines.append(f"{head}: would {rule.action} {outcome.runs} run(s)")
            continue
        text = f"{head}: {outcome.runs} run(s), {outcome.payloads_changed} payload(s) changed"
        pruned = _counts(outcome.pruned)
        lines.append(text + (f"; pruned {pruned}" if pruned else ""))
    history = _counts(report.history_pruned)
    prefix = "would prune" if report.dry_run else "pruned"
    before = iso(report.history_cutoff)
    lines.append(f"history before {before}: {prefix} {history or 'nothing'}")
    return lines


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{count} {table}" for table, count in sorted(counts.items()) if count)


def register(app: typer.Typer, runs_app: typer.Typer) -> None:
    """Add `corral retention …` to `app` (nothing under `corral runs`)."""
    app.add_typer(retention_app, name="retention")


__all__ = ["apply_audited", "batch_entry", "register", "retention_app"]
