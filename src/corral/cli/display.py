"""How runs, journals and workflows look on a terminal (rich). `--json` lives in `shapes.py`.

Data from runs is always rendered as plain `Text`, never as rich markup, so a payload holding
`[bold]` prints as written.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from corral import Workflow
from corral.cli.shapes import decode, type_name
from corral.store import RunRecord, SignalRecord, StepRecord

STATUS_STYLES = {
    "pending": "cyan",
    "running": "blue",
    "waiting": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "needs_reconciliation": "bold red",
    "started": "yellow",
}

SHORT = 60
"""Characters of a result or error shown in a table cell; `--json` has them all."""
LONG = 400
"""Characters of an input or result shown by `runs show`."""


def console(*, stderr: bool = False) -> Console:
    """A console on stdout (or stderr); wide when piped, so ids are never cut."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(file=stream, width=200 if wide else None, highlight=False, soft_wrap=False)


def status_text(status: str) -> Text:
    return Text(status, style=STATUS_STYLES.get(status, ""))


def when(timestamp: float | None) -> str:
    """A timestamp for people: UTC, to the second."""
    if timestamp is None:
        return "—"
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%SZ")


def duration(start: float, end: float | None) -> str:
    if end is None:
        return "—"
    seconds = max(end - start, 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def compact(value: Any) -> str:
    """A JSON value on one line."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def shorten(text: str, limit: int = SHORT) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_line(error_text: str | None) -> str:
    """A stored error as `Type: message`."""
    error = decode(error_text)
    if not isinstance(error, dict):
        return "" if error is None else str(error)
    return f"{error.get('type', 'Error')}: {error.get('message', '')}"


def traceback_of(error_text: str | None) -> str | None:
    error = decode(error_text)
    if isinstance(error, dict) and isinstance(error.get("traceback"), str):
        return str(error["traceback"])
    return None


def waiting_for(run: RunRecord, steps: list[StepRecord], children: list[RunRecord]) -> str | None:
    """What a waiting run waits for, in words: a signal, a timer, or a child run."""
    if run.status != "waiting":
        return None
    if run.wake_at is not None and run.wake_at <= time.time():
        return "nothing: it is runnable now and a worker will resume it"
    for step in steps:
        if step.status != "started":
            continue
        detail = decode(step.detail) if step.detail else {}
        if step.kind == "signal":
            deadline = detail.get("deadline") if isinstance(detail, dict) else None
            until = f" (until {when(deadline)})" if deadline else ""
            return f"signal {step.name!r}{until}"
        if step.kind == "sleep" and isinstance(detail, dict) and "wake_at" in detail:
            return f"a timer, until {when(float(detail['wake_at']))}"
        if isinstance(detail, dict) and "retry_at" in detail:
            attempts = detail.get("attempts") or [{}]
            return (
                f"a retry of step {step.seq} ({step.name}) at {when(float(detail['retry_at']))};"
                f" attempt {len(attempts)} failed: {attempts[-1].get('error', '?')}"
            )
    unfinished = [child.run_id for child in children if not child.finished]
    if unfinished:
        return f"child run {', '.join(unfinished)}"
    if run.wake_at is not None:
        return f"a timer, until {when(run.wake_at)}"
    return "an event (a signal or a child run)"


def _attempts(step: StepRecord) -> int:
    """Failed attempts a step's journal entry records (retries), 0 for none."""
    if not step.detail or '"attempts"' not in step.detail:
        return 0
    detail = decode(step.detail)
    attempts = detail.get("attempts") if isinstance(detail, dict) else None
    return len(attempts) if isinstance(attempts, list) else 0


def runs_table(runs: list[RunRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run id", no_wrap=True)
    table.add_column("workflow", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    for run in runs:
        table.add_row(
            Text(run.run_id),
            Text(f"{run.workflow}@{run.workflow_version}"),
            status_text(run.status),
            Text(when(run.created_at)),
            Text(when(run.updated_at)),
        )
    return table


def steps_table(steps: list[StepRecord]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="journal", title_justify="left")
    table.add_column("seq", justify="right")
    table.add_column("kind", no_wrap=True)
    table.add_column("name", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("result / error")
    for step in steps:
        if step.status == "failed":
            outcome = Text(shorten(error_line(step.error)), style="red")
        elif step.result is not None:
            outcome = Text(shorten(compact(decode(step.result))))
        elif step.detail is not None:
            outcome = Text(shorten(compact(decode(step.detail))), style="dim")
        else:
            outcome = Text("")
        name = step.name + (" (at most once)" if step.at_most_once else "")
        failed = _attempts(step)
        if failed:
            # A failed step's last attempt is among those recorded; otherwise one more was made
            # (it succeeded) or is due (a retry is waiting).
            made = failed if step.status == "failed" else failed + 1
            name += f" ({made} attempts)"
        table.add_row(
            Text(str(step.seq)),
            Text(step.kind),
            Text(name),
            status_text(step.status),
            Text(duration(step.started_at, step.finished_at)),
            outcome,
        )
    return table


def run_detail(
    run: RunRecord,
    steps: list[StepRecord],
    children: list[RunRecord],
    signals: list[SignalRecord],
    *,
    show_traceback: bool,
) -> RenderableType:
    """`runs show`: the run's fields, then its journal step by step."""
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column()

    def row(label: str, value: str | Text) -> None:
        grid.add_row(label, value if isinstance(value, Text) else Text(value))

    row("run", run.run_id)
    row("status", status_text(run.status))
    waits = waiting_for(run, steps, children)
    if waits:
        row("waiting for", waits)
    row("workflow", f"{run.workflow}@{run.workflow_version}")
    row("tenant", run.tenant)
    if run.idempotency_key is not None:
        row("idempotency key", run.idempotency_key)
    row("input", shorten(compact(decode(run.input)), LONG))
    if run.result is not None:
        row("result", shorten(compact(decode(run.result)), LONG))
    if run.error is not None:
        error = decode(run.error)
        code = f" [{error.get('code')}]" if isinstance(error, dict) and error.get("code") else ""
        row("error", Text(error_line(run.error) + code, style="red"))
    row("created", when(run.created_at))
    row("updated", when(run.updated_at))
    if run.lease_owner is not None:
        lease = f"{run.lease_owner} (epoch {run.lease_epoch}, until {when(run.lease_expires_at)})"
        row("lease", lease)
    row("claims", str(run.claims))
    if run.parent_run_id is not None:
        row("parent", f"{run.parent_run_id} (its step {run.parent_step_seq})")
    for index, child in enumerate(children):
        line = Text(f"{child.run_id}  {child.workflow}  ")
        line.append_text(status_text(child.status))
        line.append(f"  (step {child.parent_step_seq})")
        row("children" if index == 0 else "", line)
    pending = [signal for signal in signals if signal.consumed_seq is None]
    for index, signal in enumerate(pending):
        row(
            "pending signals" if index == 0 else "",
            f"{signal.name} (sent {when(signal.created_at)})",
        )
    parts: list[RenderableType] = [grid]
    if steps:
        parts.append(steps_table(steps))
    else:
        parts.append(Text("journal: no steps yet", style="dim"))
    if show_traceback:
        parts.extend(_tracebacks(run, steps))
    return Group(*parts)


def _tracebacks(run: RunRecord, steps: list[StepRecord]) -> list[RenderableType]:
    found: list[RenderableType] = []
    for step in steps:
        text = traceback_of(step.error)
        if text:
            found.append(Text(f"\ntraceback of step {step.seq} ({step.name}):", style="bold"))
            found.append(Text(text.rstrip()))
    text = traceback_of(run.error)
    if text:
        found.append(Text("\ntraceback of the run:", style="bold"))
        found.append(Text(text.rstrip()))
    if not found:
        found.append(Text("\nno traceback recorded", style="dim"))
    return found


def workflows_table(workflows: list[Workflow[Any, Any]]) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("workflow", no_wrap=True)
    table.add_column("version", no_wrap=True)
    table.add_column("input", overflow="fold")
    table.add_column("output", overflow="fold")
    for wf in sorted(workflows, key=lambda wf: wf.name):
        table.add_row(
            Text(wf.name),
            Text(wf.version),
            Text(type_name(wf.input_type)),
            Text(type_name(wf.output_type)),
        )
    return table


def answer_table(items: list[dict[str, Any]], columns: list[str]) -> Table:
    """A table of API answers (remote mode): one row per item, `columns` its keys, values as
    plain text (lists joined, JSON compact, missing as —)."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False)
    for column in columns:
        table.add_column(column.replace("_", " "), overflow="fold")
    for item in items:
        table.add_row(*(_cell(column, item.get(column)) for column in columns))
    return table


def _cell(column: str, value: Any) -> Text:
    if value is None:
        return Text("—")
    if column in ("status", "state") and isinstance(value, str):
        return status_text(value)
    if isinstance(value, list):
        return Text(", ".join(str(part) for part in value))
    if isinstance(value, str):
        return Text(value)
    return Text(compact(value))
