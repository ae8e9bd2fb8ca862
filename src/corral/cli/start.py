"""`corral run`: start a run, and with `--wait` execute it here and report its outcome."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from corral import InvalidInput, RunHandle, UsageError
from corral.cli.display import error_line, waiting_for
from corral.cli.exits import ExitCode, exit_code_for_status, reporting_errors
from corral.cli.following import following
from corral.cli.inputs import parse_json, read_input, takes_text
from corral.cli.remote import Remote, run_record, segment, step_record
from corral.cli.session import Settings, run_async
from corral.cli.shapes import decode, dumps, run_json
from corral.cli.waiting import WaitOutcome, execute_until_settled, is_settled_status
from corral.control.app_loading import load_workflows
from corral.store import RunRecord, StepRecord

EPILOG = """\
Examples:

  corral run greet --input '{"name": "Ada"}'

  corral run greet --input '{"name": "Ada"}' --wait

  corral run myproject.flows:order --input-file order.json --idempotency-key order-42

  RUN=$(corral run approval --input '{}')   # stdout holds only the run id

Exit codes: 0 started (or, with --wait, succeeded) · 1 with --wait: failed, cancelled or needs
reconciliation · 2 bad input, unknown workflow · 3 database unusable · 4 with --wait: not
finished yet (waiting on a timer or a signal, --timeout passed, interrupted).
"""


REMOTE_POLL_INTERVAL = 0.5
"""Seconds between reads of a run that `corral --server URL run --wait` watches."""


def run_command(
    ctx: typer.Context,
    workflow: Annotated[
        str,
        typer.Argument(
            metavar="WORKFLOW",
            help="A registered workflow name (see `corral workflows`) or a "
            "package.module:function reference.",
            show_default=False,
        ),
    ],
    input_json: Annotated[
        str | None,
        typer.Option(
            "--input",
            "-i",
            metavar="JSON",
            help="The run's input as JSON. For a workflow whose input is text (an agent), text "
            "that is not JSON is taken as the text: `corral run mymod:agent -i 'Where is A-1?'`.",
            show_default=False,
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option(
            "--input-file",
            metavar="PATH",
            help="Read the input JSON from a file (`-` for stdin).",
            show_default=False,
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            metavar="KEY",
            help="Start at most one run per key: a key used before returns that earlier run.",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            help="Execute the run in this process and print its outcome. Stops when the run "
            "finishes, or when it is parked on a timer or a signal (exit 4).",
        ),
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            min=0,
            help="With --wait (implied): keep executing through timers and signals for up to "
            "SECONDS, then stop (exit 4 if the run has not finished).",
            show_default=False,
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="With --wait (implied): print agents' output on stderr as it streams, and "
            "their tool calls as they happen.",
        ),
    ] = False,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run as JSON (see docs/cli.md).")
    ] = False,
) -> None:
    """Start a run of WORKFLOW and print its run id.

    Without --wait the run is left pending for a worker (`corral worker`). With --wait it is
    executed in this process by an embedded worker.
    """
    settings = Settings.of(ctx)
    with reporting_errors():
        try:
            input_text = read_input(input_json, input_file)
            plain_text: str | None = None
        except InvalidInput:
            if input_json is None:
                raise
            input_text, plain_text = None, input_json  # text, if the workflow takes text
        if settings.server is not None and follow:
            raise UsageError("--follow needs the run executed here; it has no remote mode")
        workflows = [] if settings.server is not None else load_workflows(settings.app)
    wait = wait or timeout is not None or follow
    if settings.server is not None:
        # Remote mode: the server starts it, and --wait watches it while a worker executes it.
        value = plain_text if input_text is None else parse_json(input_text, source="--input")
        with reporting_errors(), settings.remote() as remote:
            started = _start_remote(
                remote, workflow, value, idempotency_key, wait, timeout, quiet=json_output
            )
        _report(started, json_output=json_output, timeout=timeout)

    async def start() -> Started:
        async with settings.corral(workflows) as corral:
            # The input goes in as JSON bytes: the engine reads `str` and `bytes` inputs as JSON
            # text, and bytes stay JSON text however `str` inputs are read in the future.
            payload: Any = None if input_text is None else input_text.encode()
            if plain_text is not None:
                if not takes_text(corral.workflows.resolve(workflow)):
                    read_input(input_json, None)  # raise the JSON error after all
                payload = plain_text
            handle: RunHandle[Any] = await corral.start(
                workflow, payload, idempotency_key=idempotency_key, started_by=settings.principal
            )
            run = await corral.get_run(handle.run_id)
            if not json_output:
                # At once, so the run can be signalled from another shell while this one waits.
                _announce(run, handle.created)
            if not wait:
                if run.status == "pending" and not json_output:
                    typer.echo(
                        "a worker executes it: run `corral worker`, or start runs with --wait",
                        err=True,
                    )
                return Started(run, handle.created)
            with following(follow):
                outcome = await execute_until_settled(corral, handle.run_id, timeout=timeout)
            if outcome.run.finished:
                return Started(outcome.run, handle.created, outcome)
            # Say what an unfinished run waits for.
            steps = await corral.journal(handle.run_id)
            children = await corral.store.list_runs(parent_run_id=handle.run_id, limit=100)
            return Started(outcome.run, handle.created, outcome, steps, children)

    _report(run_async(start), json_output=json_output, timeout=timeout)


def _report(started: Started, *, json_output: bool, timeout: float | None) -> NoReturn:
    if json_output:
        typer.echo(dumps({**run_json(started.run), "created": started.created}))
    elif started.outcome is not None:
        _report_outcome(started, started.outcome, timeout)
    if started.outcome is not None:
        raise typer.Exit(exit_code_for_status(started.run.status))
    raise typer.Exit(ExitCode.OK)


@dataclass(frozen=True, slots=True)
class Started:
    """What `corral run` has to report."""

    run: RunRecord
    created: bool
    outcome: WaitOutcome | None = None
    steps: list[StepRecord] = field(default_factory=list)
    children: list[RunRecord] = field(default_factory=list)


def _start_remote(
    remote: Remote,
    workflow: str,
    value: Any,
    idempotency_key: str | None,
    wait: bool,
    timeout: float | None,
    *,
    quiet: bool,
) -> Started:
    """`corral --server URL run`: start the run there; with --wait, poll it until it finishes,
    parks (waits for a timer or a signal; with --timeout, until the deadline), or time is up."""
    status, data = remote.post_status(
        "/runs", {"workflow": workflow, "input": value, "idempotency_key": idempotency_key}
    )
    run, created = run_record(data), status == 201
    if not quiet:
        _announce(run, created)
    if not wait:
        if run.status == "pending" and not quiet:
            typer.echo("the server's workers execute it", err=True)
        return Started(run, created)
    path = f"/runs/{segment(run.run_id)}"
    deadline = None if timeout is None else time.monotonic() + timeout
    while not is_settled_status(run):
        if deadline is None and run.status == "waiting":
            steps = remote.get(f"{path}/journal")["steps"]
            parked = [step_record(run.run_id, step) for step in steps]
            return Started(run, created, WaitOutcome(run, "parked"), parked)
        if deadline is not None and time.monotonic() >= deadline:
            return Started(run, created, WaitOutcome(run, "timeout"))
        time.sleep(REMOTE_POLL_INTERVAL)
        run = run_record(remote.get(path))
    return Started(run, created, WaitOutcome(run, "finished"))


def _announce(run: RunRecord, created: bool) -> None:
    """The run id on stdout (all a script needs); what happened on stderr."""
    typer.echo(run.run_id)
    what = f"{run.workflow}@{run.workflow_version}"
    if created:
        typer.echo(f"started run {run.run_id} of {what}", err=True)
    else:
        typer.echo(
            f"existing run {run.run_id} of {what} for idempotency key {run.idempotency_key!r} "
            f"(status {run.status}); nothing new was started",
            err=True,
        )


def _report_outcome(started: Started, outcome: WaitOutcome, timeout: float | None) -> None:
    run = started.run
    typer.echo(f"status: {run.status}")
    if run.status == "succeeded":
        typer.echo(f"result: {dumps(decode(run.result))}")
        return
    if run.error is not None:
        typer.echo(f"error: {error_line(run.error)}")
        typer.echo(f"details: corral runs show {run.run_id} --traceback", err=True)
        return
    if outcome.settled == "parked":
        waits = waiting_for(run, started.steps, started.children) or "a worker"
        typer.echo(f"the run is parked, waiting for {waits}", err=True)
        signal = next(
            (s for s in started.steps if s.kind == "signal" and s.status == "started"), None
        )
        if signal is not None:
            typer.echo(
                f"send it with: corral signal {run.run_id} {signal.name} --data JSON, "
                "then run `corral worker`",
                err=True,
            )
        else:
            typer.echo(
                "`corral worker` resumes it when it is due "
                "(or wait longer here with --timeout SECONDS)",
                err=True,
            )
    elif outcome.settled == "timeout":
        typer.echo(
            f"not finished after --timeout {timeout:g}s; `corral worker` continues it", err=True
        )
    elif outcome.settled == "interrupted":
        typer.echo(
            f"interrupted: the run was handed back ({run.status}); `corral worker` continues it",
            err=True,
        )


def register(app: typer.Typer) -> None:
    app.command("run", epilog=EPILOG)(run_command)
