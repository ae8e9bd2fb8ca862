"""`corral worker`: claim and execute runs until stopped (SIGINT/SIGTERM) or, with
`--until-idle`, until nothing is runnable. Messages go to stderr; stdout stays empty."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, cast

import typer

from corral import Workflow
from corral.agents.replay import with_replay
from corral.cli.exits import reporting_errors
from corral.cli.session import Settings, on_stop_signals, run_async
from corral.control.app_loading import load_workflows
from corral.engine import WorkerStats
from corral.engine.worker import new_worker_id
from corral.observe.logs import FORMATS, LogFormat, logging_configured

EPILOG = """\
Examples:

  corral --app myproject.flows worker --concurrency 32

  corral worker --until-idle        # execute what is runnable now, then exit (batch jobs)

  corral worker --log-format json --log-level info   # one JSON object per log line

Stop it with Ctrl-C or SIGTERM: it stops claiming, runs in flight stop at their next step and
are handed back (runnable at once for another worker). A second Ctrl-C stops at once; those runs
are then resumed by another worker when their lease expires (--lease-ttl).
"""

LOG_LEVELS = ("debug", "info", "warning", "error")


def _check_format(value: str) -> str:
    if value.lower() not in FORMATS:
        raise typer.BadParameter(f"unknown log format {value!r}; use one of {', '.join(FORMATS)}")
    return value.lower()


def _check_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise typer.BadParameter(f"unknown level {value!r}; use one of {', '.join(LOG_LEVELS)}")
    return value.lower()


def worker_command(
    ctx: typer.Context,
    concurrency: Annotated[
        int, typer.Option("--concurrency", "-c", min=1, help="Runs executed at the same time.")
    ] = 16,
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle",
            help="Exit once nothing is runnable (runs waiting on timers or signals stay parked).",
        ),
    ] = False,
    lease_ttl: Annotated[
        float,
        typer.Option(
            "--lease-ttl",
            metavar="SECONDS",
            min=0.1,
            help="How long a claim lasts without a heartbeat; after that another worker may "
            "take the run over. Heartbeats renew it every third of this.",
        ),
    ] = 30.0,
    poll_interval: Annotated[
        float,
        typer.Option(
            "--poll-interval",
            metavar="SECONDS",
            min=0.01,
            help="How often to look for runs made runnable by other processes.",
        ),
    ] = 0.5,
    grace: Annotated[
        float,
        typer.Option(
            "--grace",
            metavar="SECONDS",
            min=0,
            help="On stop, how long runs in flight may take to finish their current step.",
        ),
    ] = 30.0,
    worker_id: Annotated[
        str | None,
        typer.Option(
            "--worker-id",
            metavar="ID",
            help="This worker's name in leases (default: host:pid:random).",
            show_default=False,
        ),
    ] = None,
    log_level: Annotated[
        str,
        typer.Option(
            "--log-level",
            metavar="LEVEL",
            callback=_check_level,
            help=f"Engine log messages to show on stderr: {', '.join(LOG_LEVELS)}.",
        ),
    ] = "warning",
    log_format: Annotated[
        str,
        typer.Option(
            "--log-format",
            metavar="FORMAT",
            callback=_check_format,
            help="text: the engine's messages as lines of text. json: every log record of the "
            "process (engine and workflow code) as one JSON object per line, with the run, "
            "step and trace ids of the code that logged it (docs/observability.md).",
        ),
    ] = "text",
) -> None:
    """Run a worker: claim runnable runs from the database and execute them.

    Prints a start line and, at exit, a summary (claimed runs and their outcomes) on stderr.
    """
    settings = Settings.of(ctx)
    with reporting_errors():
        workflows = with_replay(load_workflows(settings.app))
    worker_id = worker_id or new_worker_id()  # known before the worker: log lines carry it

    async def work() -> tuple[str, WorkerStats, bool]:
        async with settings.corral(
            workflows, lease_ttl=lease_ttl, poll_interval=poll_interval
        ) as corral:
            worker = corral.worker(
                concurrency=concurrency, worker_id=worker_id, poll_interval=poll_interval
            )
            signalled = False

            def stop() -> None:
                nonlocal signalled
                signalled = True
                worker.stop()  # first: saying so below may fail (stderr closed with our parent)
                with contextlib.suppress(OSError):
                    typer.echo(
                        f"worker {worker.worker_id}: stopping; runs in flight are handed back "
                        "(press Ctrl-C again to stop at once)",
                        err=True,
                    )

            typer.echo(_start_line(worker.worker_id, settings, workflows, concurrency), err=True)
            with on_stop_signals(stop):
                stats = await worker.run(until_idle=until_idle, grace=grace)
            return worker.worker_id, stats, signalled

    with _engine_logging(log_level, cast(LogFormat, log_format), worker_id):
        name, stats, signalled = run_async(work)
    reason = "stopped by a signal" if signalled else "idle" if until_idle else "stopped"
    typer.echo(f"worker {name} {reason}: {_summary(stats)}", err=True)


def _start_line(
    worker_id: str, settings: Settings, workflows: list[Workflow[Any, Any]], concurrency: int
) -> str:
    names = ", ".join(sorted(wf.key for wf in workflows)) or "none registered"
    return (
        f"worker {worker_id} started on {settings.database_label} (concurrency {concurrency}); "
        f"workflows: {names}; module:function references load on demand"
    )


def _summary(stats: WorkerStats) -> str:
    outcomes = ", ".join(f"{count} {outcome}" for outcome, count in sorted(stats.outcomes.items()))
    return f"claimed {stats.claimed} run(s)" + (f"; {outcomes}" if outcomes else "")


@contextmanager
def _engine_logging(level: str, log_format: LogFormat, worker_id: str) -> Iterator[None]:
    """Show the engine's log messages on stderr for the duration of the command (as JSON:
    every record of the process, so workflow code's lines are structured too)."""
    if log_format == "json":
        with logging_configured("json", level, stream=sys.stderr, worker=worker_id):
            yield
        return
    logger = logging.getLogger("corral")
    handler = logging.StreamHandler()  # stderr as it is now (CliRunner swaps it in tests)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(level.upper())
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def register(app: typer.Typer) -> None:
    app.command("worker", epilog=EPILOG)(worker_command)
