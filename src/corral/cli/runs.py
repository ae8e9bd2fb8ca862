"""`corral runs list|show|cancel|reconcile`: look at runs and their journals; act on one."""

from __future__ import annotations

from typing import Annotated, cast

import typer

from corral.cli.display import console, run_detail, runs_table
from corral.cli.exits import fail as fail_usage
from corral.cli.exits import reporting_errors
from corral.cli.inputs import parse_json
from corral.cli.remote import run_record, segment, step_record
from corral.cli.session import Settings, run_async
from corral.cli.shapes import dumps, run_detail_json, run_json
from corral.governance.identity import authorize
from corral.governance.redaction import Redactor
from corral.governance.retention import finished_runs, redact_run
from corral.governance.run_control import cancel_governed
from corral.store import RUN_STATUSES, RunRecord, RunStatus, SignalRecord, StepRecord
from corral.store.scripts import Dialect, Script

runs_app = typer.Typer(
    name="runs",
    help="List runs, show one with its journal, cancel, reconcile or redact them.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON (see docs/cli.md).")]
RunIdArgument = Annotated[
    str, typer.Argument(metavar="RUN_ID", help="The run's id.", show_default=False)
]


def _check_status(value: str | None) -> str | None:
    if value is not None and value not in RUN_STATUSES:
        raise typer.BadParameter(
            f"unknown status {value!r}; valid statuses: {', '.join(RUN_STATUSES)}"
        )
    return value


@runs_app.command(
    "list",
    epilog="Examples:\n\n  corral runs list\n\n  corral runs list --status failed --limit 10"
    "\n\n  corral runs list --workflow greet --json",
)
def list_runs(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            metavar="STATUS",
            callback=_check_status,
            help=f"Only runs in this status: {', '.join(RUN_STATUSES)}.",
            show_default=False,
        ),
    ] = None,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            "-w",
            metavar="NAME",
            help="Only runs of this workflow (its registered name or module:function reference).",
            show_default=False,
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, help="At most this many runs.")
    ] = 50,
    json_output: JsonOption = False,
) -> None:
    """List the tenant's runs (`--tenant`), newest first: id, workflow@version, status, created
    and updated (UTC)."""
    settings = Settings.of(ctx)

    async def fetch() -> list[RunRecord]:
        async with settings.corral(existing=True) as corral:
            return await corral.store.list_runs(
                status=cast(RunStatus | None, status),
                workflow=workflow,
                limit=limit,
                tenant=settings.tenant,
            )

    if settings.server is not None:
        query = {"status": status, "workflow": workflow}
        with reporting_errors(), settings.remote() as remote:
            runs = [run_record(item) for item in remote.items("/runs", query, limit=limit)]
    else:
        runs = run_async(fetch)
    if json_output:
        typer.echo(dumps({"runs": [run_json(run) for run in runs]}))
        return
    if not runs:
        where = settings.server or settings.database_label
        tenant = "the key's tenant" if settings.server else f"tenant {settings.tenant!r}"
        typer.echo(f"no runs of {tenant} in {where}", err=True)
        return
    console().print(runs_table(runs))


@runs_app.command(
    "show",
    epilog="Examples:\n\n  corral runs show 3f1c0d2e-...\n\n  corral runs show RUN_ID --traceback"
    "\n\n  corral runs show RUN_ID --json | jq '.steps[] | {seq, name, status}'",
)
def show_run(
    ctx: typer.Context,
    run_id: RunIdArgument,
    show_traceback: Annotated[
        bool,
        typer.Option("--traceback", help="Also print the tracebacks of the run's errors."),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Show a run: status, workflow, input, result or error, lease, parent and child runs,
    pending signals, and its journal step by step (results and errors shortened; --json has
    them complete)."""
    settings = Settings.of(ctx)

    async def fetch() -> tuple[RunRecord, list[StepRecord], list[RunRecord], list[SignalRecord]]:
        async with settings.corral(existing=True) as corral:
            run = await corral.get_run(run_id)
            steps = await corral.journal(run_id)
            children = await corral.store.list_runs(parent_run_id=run_id, limit=1000)
            signals = await corral.store.list_signals(run_id)
            # Oldest first: the order in which they were started.
            return run, steps, sorted(children, key=lambda c: c.created_at), signals

    if settings.server is not None:
        run, steps, children, signals = _show_remote(settings, run_id)
    else:
        run, steps, children, signals = run_async(fetch)
    if json_output:
        typer.echo(dumps(run_detail_json(run, steps, children, signals)))
        return
    with reporting_errors():
        console().print(run_detail(run, steps, children, signals, show_traceback=show_traceback))


def _show_remote(
    settings: Settings, run_id: str
) -> tuple[RunRecord, list[StepRecord], list[RunRecord], list[SignalRecord]]:
    """The run and its journal from the server. The API lists neither a run's children nor
    its signals, so remote `runs show` has none (`runs trace` shows the children)."""
    path = f"/runs/{segment(run_id)}"
    with reporting_errors(), settings.remote() as remote:
        run = run_record(remote.get(path))
        steps = [step_record(run_id, step) for step in remote.get(f"{path}/journal")["steps"]]
    return run, steps, [], []


@runs_app.command(
    "cancel",
    epilog="Example:\n\n  corral runs cancel 3f1c0d2e-...\n\nCancelling a run that is already "
    "cancelled succeeds; one that succeeded or failed is an error (exit 2).",
)
def cancel_run(ctx: typer.Context, run_id: RunIdArgument, json_output: JsonOption = False) -> None:
    """Cancel a run that has not finished, and its unfinished child runs. A worker executing it
    stops at its next write; nothing it does afterwards is recorded. A run with compensations
    (steps with `compensate=`) is sent a cancel instead: it undoes those steps, newest first,
    then ends cancelled."""
    settings = Settings.of(ctx)

    async def cancel() -> tuple[RunRecord, bool]:
        async with settings.corral(existing=True) as corral:
            return await cancel_governed(corral, run_id, principal=settings.principal)

    if settings.server is not None:
        with reporting_errors(), settings.remote() as remote:
            before = run_record(remote.get(f"/runs/{segment(run_id)}"))
            run = run_record(remote.post(f"/runs/{segment(run_id)}/cancel"))
        cancelled_now = before.status != "cancelled"
    else:
        run, cancelled_now = run_async(cancel)
    if json_output:
        typer.echo(dumps(run_json(run)))
        return
    if cancelled_now and run.status != "cancelled":
        typer.echo(
            f"cancel sent to run {run.run_id}: it makes its compensations first, then ends "
            "cancelled (corral runs show to follow it)"
        )
    elif cancelled_now:
        typer.echo(f"cancelled run {run.run_id}")
    else:
        typer.echo(f"run {run.run_id} was already cancelled")


@runs_app.command(
    "reconcile",
    epilog="Examples:\n\n"
    "  corral runs reconcile RUN_ID --retry                 # it did not happen: run it again\n\n"
    "  corral runs reconcile RUN_ID --result '\"ch_123\"'     # it happened and returned this\n\n"
    "  corral runs reconcile RUN_ID --fail 'card declined'  # count it as failed",
)
def reconcile_run(
    ctx: typer.Context,
    run_id: RunIdArgument,
    result: Annotated[
        str | None,
        typer.Option(
            "--result",
            metavar="JSON",
            help="The step took effect and returned this JSON value; the run continues with it.",
        ),
    ] = None,
    retry: Annotated[
        bool,
        typer.Option(
            "--retry",
            help="The step did not take effect: run it again (with the same idempotency key).",
        ),
    ] = False,
    fail: Annotated[
        str | None,
        typer.Option(
            "--fail",
            metavar="REASON",
            help="Count the step as failed: the workflow sees StepFailed with REASON.",
        ),
    ] = None,
) -> None:
    """Settle a run stopped in needs_reconciliation and let it resume.

    Its at-most-once step was in flight when a worker died, so nobody knows whether it took
    effect. Check the external system, then say what happened with exactly one of --result,
    --retry or --fail. A worker then resumes the run.
    """
    chosen = [
        name
        for name, given in (
            ("--result", result is not None),
            ("--retry", retry),
            ("--fail", fail is not None),
        )
        if given
    ]
    if len(chosen) != 1:
        fail_usage("say what happened with exactly one of --result JSON, --retry or --fail REASON")
    settings = Settings.of(ctx)
    value = None if result is None else parse_json(result, source="--result")

    async def reconcile() -> StepRecord:
        async with settings.corral(existing=True) as corral:
            return await corral.reconcile(run_id, retry=retry, result=value, failed=fail)

    step = run_async(reconcile)
    settled = "will run again" if retry else "failed" if fail is not None else "succeeded"
    typer.echo(
        f"run {run_id}: step {step.seq} ({step.name}) {settled}; the run is pending and a "
        "worker will resume it"
    )


@runs_app.command(
    "redact",
    epilog="Examples:\n\n"
    "  corral runs redact RUN_ID                      # one finished run\n\n"
    "  corral runs redact --finished-before 30        # every run finished 30+ days ago\n\n"
    "  CORRAL_REDACT=email,card corral runs redact RUN_ID\n\n"
    "What is redacted follows CORRAL_REDACT (default: emails, phone numbers, card numbers). "
    "Only finished runs are changed; each redaction is recorded in the audit log. It cannot be "
    "undone.",
)
def redact_runs(
    ctx: typer.Context,
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(metavar="[RUN_ID]...", help="Finished runs to redact.", show_default=False),
    ] = None,
    finished_before: Annotated[
        float | None,
        typer.Option(
            "--finished-before",
            metavar="DAYS",
            min=0,
            help="Also redact every run of the tenant that finished more than DAYS days ago.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Remove personal data from the stored payloads of finished runs (operator role).

    Inputs, results, step results and signals are rewritten with emails, phone numbers and card
    numbers replaced. The audit log keeps decisions, not payloads, so its chain is unaffected.
    """
    settings = Settings.of(ctx)
    if not run_ids and finished_before is None:
        fail_usage("name RUN_IDs or give --finished-before DAYS")
    redactor = Redactor.from_settings()

    async def redact() -> list[tuple[str, int]]:
        async with settings.corral(existing=True) as corral:
            store = corral.store
            await store.read_script(
                lambda d: authorize(
                    settings.tenant, settings.principal, "operator", action="redact runs"
                )
            )
            targets = list(run_ids or [])
            if finished_before is not None:
                cutoff = corral.clock.now() - finished_before * 86400
                targets += await store.read_script(
                    lambda d: finished_runs(settings.tenant, before=cutoff)
                )
            done = []
            actor = f"human:{settings.principal}"
            for run_id in dict.fromkeys(targets):

                def script(d: Dialect, run_id: str = run_id) -> Script[int]:
                    return redact_run(
                        run_id, redactor, actor=actor, now=corral.clock.now(), dialect=d
                    )

                done.append((run_id, await store.run_script(script)))
            return done

    for run_id, changed in run_async(redact):
        typer.echo(f"redacted run {run_id}: {changed} payload(s) changed")
