"""What the run page shows, built from the journal's views (`corral.observe`): the header, the
plain-language summary, the trace as a tree and as a timeline, and every step of the run and
its child runs with its inputs, outputs, conversation and memory diff, and cost.

Payloads are redacted as the API redacts them (`CORRAL_REDACT`), except the approvals' exact
calls, which the approvals inbox shows as they are (an approver decides on the exact call).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from corral.governance.redaction import Redactor
from corral.observe.diffs import NO_MEMORY, Conversation, message_json, rebuild_conversation
from corral.observe.journal_view import RunView, StepView, load_run_view
from corral.observe.summaries import ApprovalRecord, RunSummary, approvals_of, summary_of
from corral.observe.traces import Span, build_trace, span_id_for
from corral.store import RunRecord, Store

log = logging.getLogger("corral.server.ui")

MAX_STEPS_SHOWN = 400
"""Steps listed per run (a longer journal says how many are left out; the API has them all)."""
MAX_TIMELINE_ROWS = 300
MIN_BAR = 0.6
"""The narrowest timeline bar, in percent of the width (an instant step stays visible)."""


@dataclass(frozen=True)
class TimelineRow:
    """One span as a bar: where it starts and how wide it is, in percent of the run's time."""

    span: Span
    depth: int
    left: float
    width: float
    open: bool
    """Still in progress: the bar runs to now."""


@dataclass(frozen=True)
class StepPanel:
    """One step, as its expandable panel shows it."""

    step: StepView
    anchor: str
    inputs: Any
    output: Any
    error: Any
    decision: Any
    attempts: list[Any]
    added: list[dict[str, Any]]
    """Messages the step added to the agent's conversation (`message_json`)."""
    notes: list[str]
    cost_usd: float | None
    tokens: int | None


@dataclass(frozen=True)
class RunSection:
    """A run of the tree with its steps (children below their parents)."""

    run: RunRecord
    depth: int
    steps: list[StepPanel]
    hidden_steps: int = 0
    conversation_note: str = ""


@dataclass(frozen=True)
class RunPage:
    run: RunRecord
    input: Any
    result: Any
    error: Any
    summary: RunSummary
    trace: Span
    timeline: list[TimelineRow]
    timeline_seconds: float
    sections: list[RunSection]
    pending: list[ApprovalRecord] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    memory_note: str = NO_MEMORY

    @property
    def step_count(self) -> int:
        return sum(len(s.steps) + s.hidden_steps for s in self.sections)


async def load_run_page(
    store: Store, run_id: str, *, now: float, redactor: Redactor
) -> RunPage | None:
    """The page of run `run_id` (None if it does not exist)."""
    view = await load_run_view(store, run_id)
    if view is None:
        return None
    tree = view.walk()
    run_ids = [run.run_id for run in tree]
    approvals = await store.read_script(lambda d: approvals_of(run_ids))
    run = view.run
    parent_span = (
        span_id_for(run.parent_run_id, run.parent_step_seq)
        if run.parent_run_id is not None and run.parent_step_seq is not None
        else None
    )
    trace = build_trace(view, root_run_id=run.root_run_id or run.run_id, parent_span_id=parent_span)
    timeline, seconds = _timeline(trace, now=now)
    depths = _depths(view)
    return RunPage(
        run=run,
        input=redactor.redact_json(_decoded(run.input)),
        result=redactor.redact_json(_decoded(run.result)),
        error=redactor.redact_json(_decoded(run.error)),
        summary=_redacted_summary(summary_of(view, approvals), redactor),
        trace=trace,
        timeline=timeline,
        timeline_seconds=seconds,
        sections=[_section(each, depths[each.run_id], redactor) for each in tree],
        pending=[a for a in approvals if a.status == "pending"],
        run_ids=run_ids,
    )


# -- the timeline ------------------------------------------------------------------------------


def _walk(span: Span, depth: int = 0) -> Iterator[tuple[Span, int]]:
    yield span, depth
    for child in span.children:
        yield from _walk(child, depth + 1)


def _timeline(trace: Span, *, now: float) -> tuple[list[TimelineRow], float]:
    spans = list(_walk(trace))[:MAX_TIMELINE_ROWS]
    start = trace.started_at
    ends = [s.finished_at for s, _ in spans if s.finished_at is not None]
    open_end = max([now, *ends]) if any(s.finished_at is None for s, _ in spans) else None
    end = max([*ends, *([open_end] if open_end is not None else []), start])
    total = end - start
    rows = []
    for span, depth in spans:
        finish = span.finished_at if span.finished_at is not None else end
        if total > 0:
            left = (span.started_at - start) / total * 100
            width = (finish - span.started_at) / total * 100
        else:
            left, width = 0.0, 0.0
        left = min(max(left, 0.0), 100.0 - MIN_BAR)
        width = min(max(width, MIN_BAR), 100.0 - left)
        rows.append(
            TimelineRow(span, depth, round(left, 3), round(width, 3), span.finished_at is None)
        )
    return rows, total


# -- steps -------------------------------------------------------------------------------------


def _depths(view: RunView, depth: int = 0) -> dict[str, int]:
    found = {view.run_id: depth}
    for child in view.children.values():
        found.update(_depths(child, depth + 1))
    return found


def _section(view: RunView, depth: int, redactor: Redactor) -> RunSection:
    note = ""
    conversation: Conversation | None
    try:
        conversation = rebuild_conversation(view)
    except Exception:  # a journal this version cannot rebuild: the steps are still shown
        log.exception("could not rebuild the conversation of run %s", view.run_id)
        conversation, note = None, "The conversation of this run could not be rebuilt."
    shown = view.steps[:MAX_STEPS_SHOWN]
    return RunSection(
        run=view.run,
        depth=depth,
        steps=[_panel(step, conversation, redactor) for step in shown],
        hidden_steps=len(view.steps) - len(shown),
        conversation_note=note,
    )


def _panel(step: StepView, conversation: Conversation | None, redactor: Redactor) -> StepPanel:
    detail = {k: v for k, v in step.detail.items() if k != "attempts"}
    inputs: Any = detail.get("input", detail or None)
    added = [] if conversation is None else conversation.added_by(step.seq)
    notes = [] if conversation is None else list(conversation.notes.get(step.seq, []))
    usage = step.usage
    return StepPanel(
        step=step,
        anchor=f"step-{step.run_id[:8]}-{step.seq}",
        inputs=redactor.redact_json(inputs),
        output=redactor.redact_json(step.result),
        error=redactor.redact_json(step.error),
        decision=step.decision,
        attempts=redactor.redact_json(step.attempts),
        added=[redactor.redact_json(message_json(m)) for m in added],
        notes=[redactor.redact_text(n) for n in notes],
        cost_usd=step.cost_usd,
        tokens=usage.total_tokens if usage is not None else None,
    )


def _redacted_summary(summary: RunSummary, redactor: Redactor) -> RunSummary:
    def lines(values: list[str]) -> list[str]:
        return [redactor.redact_text(v) for v in values]

    return dataclasses.replace(
        summary,
        asked=redactor.redact_text(summary.asked),
        agents=lines(summary.agents),
        decisions=lines(summary.decisions),
        tools=lines(summary.tools),
        approvals=lines(summary.approvals),
        outcome=redactor.redact_text(summary.outcome),
        text=redactor.redact_text(summary.text),
    )


def _decoded(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = ["RunPage", "RunSection", "StepPanel", "TimelineRow", "load_run_page"]
