"""The journal as observability reads it: each step classified and its payloads decoded.

Traces, costs, search, diffs, replay, comparisons and summaries are *views of the journal*, not
a second log: they all start here. A `StepView` says what a journal entry was (a model call of
agent X on model Y with this usage and cost, a tool call with these arguments, a wait, a child
run…), from its kind, its name and its payloads as the engine and the tool loop write them:

| journal entry | category | what is decoded |
| --- | --- | --- |
| step `model:<agent>` | `model` | the response: `model`, `usage`, `fallbacks`, the message |
| step `tool:<name>` | `tool` | `detail.input` (call id, arguments); the `value`, `decision` |
| step `approval:<tool>`, `review:<agent>`, `approval.deadline:<tool>` | `approval` | the request |
| step `handoff:<agent>` | `handoff` | the target |
| step `agent.failed:<agent>` | `limit` | the error that ended the loop |
| step `compensate:<step>` | `compensation` | |
| step `tools.list:<toolset>` | `tool_list` | |
| `child.start` / `child.result` | `child` | the child run's id |
| `signal`, `sleep`, `now` | `wait`, `timer`, `clock` | |
| any other step | `step` | |

Every step also carries its attempts (retries) and its error. Nothing here writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from corral.models.messages import Usage
from corral.models.prices import cost_usd
from corral.store import RunRecord, StepRecord, Store

Category = Literal[
    "model",
    "tool",
    "approval",
    "handoff",
    "limit",
    "compensation",
    "tool_list",
    "child",
    "wait",
    "timer",
    "clock",
    "step",
]

_PREFIXES: tuple[tuple[str, Category], ...] = (
    ("model:", "model"),
    ("tool:", "tool"),
    ("approval.deadline:", "approval"),
    ("approval:", "approval"),
    ("review:", "approval"),
    ("handoff:", "handoff"),
    ("agent.failed:", "limit"),
    ("compensate:", "compensation"),
    ("tools.list:", "tool_list"),
)


@dataclass(frozen=True)
class StepView:
    """One journal entry, classified and decoded."""

    record: StepRecord
    category: Category
    subject: str | None
    """What the name is about: the agent (model, limit, review), the tool (tool, approval), the
    handoff target, the compensated step; None for engine steps."""
    result: Any
    """The decoded result (JSON), or None."""
    error: dict[str, Any] | None
    detail: dict[str, Any]
    """The decoded detail: `input` (what a step was called with), `attempts`, timers."""

    @property
    def run_id(self) -> str:
        return self.record.run_id

    @property
    def seq(self) -> int:
        return self.record.seq

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def status(self) -> str:
        return self.record.status

    @property
    def started_at(self) -> float:
        return self.record.started_at

    @property
    def finished_at(self) -> float | None:
        return self.record.finished_at

    @property
    def duration(self) -> float | None:
        if self.record.finished_at is None:
            return None
        return max(self.record.finished_at - self.record.started_at, 0.0)

    @property
    def attempts(self) -> list[dict[str, Any]]:
        """Failed attempts before this outcome (each with its error and what was decided)."""
        attempts = self.detail.get("attempts")
        return list(attempts) if isinstance(attempts, list) else []

    # -- model steps -------------------------------------------------------------------------

    @property
    def agent(self) -> str | None:
        """The agent a model, review or limit step belongs to."""
        if self.category in ("model", "limit") or self.name.startswith("review:"):
            return self.subject
        return None

    @property
    def model(self) -> str | None:
        """The model that answered a model step (`provider:name`)."""
        if self.category != "model" or not isinstance(self.result, Mapping):
            return None
        model = self.result.get("model")
        return str(model) if model is not None else None

    @property
    def usage(self) -> Usage | None:
        """Tokens of a model step that succeeded."""
        if self.category != "model" or not isinstance(self.result, Mapping):
            return None
        return Usage.model_validate(self.result.get("usage") or {})

    @property
    def cost_usd(self) -> float | None:
        """What a model step cost, priced when it finished (None: unknown price or no call)."""
        usage, model = self.usage, self.model
        if usage is None or model is None:
            return None
        return cost_usd(model, usage, at=self.record.finished_at)

    @property
    def message(self) -> dict[str, Any] | None:
        """A model step's answer: `content`, `tool_calls` (name and JSON arguments)."""
        if self.category != "model" or not isinstance(self.result, Mapping):
            return None
        message = self.result.get("message")
        return dict(message) if isinstance(message, Mapping) else None

    # -- tool steps --------------------------------------------------------------------------

    @property
    def tool(self) -> str | None:
        return self.subject if self.category in ("tool", "approval") else None

    @property
    def call(self) -> dict[str, Any] | None:
        """What a tool step was called with: `call_id`, `tool`, `arguments` (and, for an approved
        call, `approved_arguments` and `approval_id`)."""
        recorded = self.detail.get("input")
        return dict(recorded) if isinstance(recorded, Mapping) else None

    @property
    def tool_value(self) -> Any:
        """What a tool call returned (its outcome's `value`)."""
        if self.category == "tool" and isinstance(self.result, Mapping):
            return self.result.get("value")
        return None

    @property
    def decision(self) -> dict[str, Any] | None:
        """The policy decision a tool step recorded (effect, policy, version, rule, reason)."""
        if self.category == "tool" and isinstance(self.result, Mapping):
            decision = self.result.get("decision")
            return dict(decision) if isinstance(decision, Mapping) else None
        return None

    # -- child runs --------------------------------------------------------------------------

    @property
    def child_run_id(self) -> str | None:
        if self.record.kind == "child.start" and isinstance(self.result, str):
            return self.result
        return None


@dataclass(frozen=True)
class RunView:
    """A run with its journal decoded, and (when loaded) its child runs, each nested under the
    step that started it."""

    run: RunRecord
    steps: list[StepView]
    children: dict[int, RunView] = field(default_factory=dict)
    """Child runs by the seq of the `child.start` step that started them."""

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def walk(self) -> list[RunView]:
        """This run and every descendant, parents before children."""
        found = [self]
        for seq in sorted(self.children):
            found.extend(self.children[seq].walk())
        return found


def step_view(record: StepRecord) -> StepView:
    """Classify and decode one journal entry."""
    category: Category = "step"
    subject: str | None = None
    if record.kind == "step":
        for prefix, kind in _PREFIXES:
            if record.name.startswith(prefix):
                category, subject = kind, record.name[len(prefix) :]
                break
    elif record.kind in ("child.start", "child.result"):
        category, subject = "child", record.name
    elif record.kind == "signal":
        category, subject = "wait", record.name
    elif record.kind == "sleep":
        category = "timer"
    elif record.kind == "now":
        category = "clock"
    detail = _decode(record.detail)
    return StepView(
        record=record,
        category=category,
        subject=subject,
        result=_decode(record.result) if record.result is not None else None,
        error=_as_dict(_decode(record.error)) if record.error else None,
        detail=_as_dict(detail) or {},
    )


async def load_run_view(store: Store, run_id: str, *, descendants: bool = True) -> RunView | None:
    """A run and its decoded journal (and, by default, every descendant run); None if unknown."""
    run = await store.get_run(run_id)
    if run is None:
        return None
    steps = [step_view(record) for record in await store.load_journal(run_id)]
    children: dict[int, RunView] = {}
    if descendants:
        for step in steps:
            child_id = step.child_run_id
            if child_id is None:
                continue
            child = await load_run_view(store, child_id, descendants=True)
            if child is not None:
                children[step.seq] = child
    return RunView(run=run, steps=steps, children=children)


def _decode(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _as_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


__all__ = ["Category", "RunView", "StepView", "load_run_view", "step_view"]
