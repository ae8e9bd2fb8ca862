"""Traces: a run as a tree of spans, read from its journal.

A run is a trace. Its root span is the run itself; each journal entry is a span under it, in
step order; a child run (a delegated agent, a `fan_out` worker, a routed event) nests under the
`child.start` step that started it, with its own steps under it, and so on down. Nothing is
recorded while the run executes: the tree is rebuilt from the journal whenever it is asked for,
so tracing costs a step nothing (`corral.observe.otel` exports the same tree to OpenTelemetry).

Ids are derived from the journal, so building (or exporting) the same run twice gives the same
ids: the trace id is the first 16 bytes of SHA-256 of the root run's id, a span id the first 8
bytes of SHA-256 of `run_id:seq` (seq 0 for the run's own span).

```
invoke_agent supervisor              run, 2.1s, 1,204 tokens, $0.0031 (subtree)
├── chat openai:gpt-4o               model step of the supervisor
├── execute_tool ask_billing         child.start of a delegation (the model's call)
│   └── invoke_agent billing         the child run
│       └── chat openai:gpt-4o-mini
├── child.result agent:billing       waiting for it
└── chat openai:gpt-4o
```

Each span carries its own tokens and cost (model steps only) and the totals of its subtree
(`Span.totals`): a child run's calls count in every ancestor's totals exactly once, because each
model step is exactly one span and a span's totals are its own plus its children's.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from corral.observe.journal_view import Category, RunView, StepView, load_run_view
from corral.store import FINISHED_STATUSES, Store

SpanKind = Literal["run"] | Category
"""What a span is: a run, or the category of the step it is (`model`, `tool`, `child`…)."""

SpanStatus = Literal["ok", "error", "unset"]
"""OpenTelemetry's span statuses: `unset` is a run or step still in progress."""

Operation = Literal["chat", "invoke_agent", "execute_tool"]
"""`gen_ai.operation.name` of the OpenTelemetry GenAI conventions, for the spans it applies to."""

_FAILED_RUN = frozenset({"failed", "cancelled", "needs_reconciliation"})


@dataclass(frozen=True)
class SpanError:
    """Why a run or a step failed, as journaled."""

    code: str
    type: str
    message: str
    traceback: str | None = None

    @staticmethod
    def of(payload: Mapping[str, Any]) -> SpanError:
        """The error of a journal payload (`{"code", "type", "message", "traceback", …}`)."""
        return SpanError(
            code=str(payload.get("code") or "error"),
            type=str(payload.get("type") or payload.get("code") or "Error"),
            message=str(payload.get("message") or ""),
            traceback=str(payload["traceback"]) if payload.get("traceback") else None,
        )


@dataclass(frozen=True)
class Totals:
    """Tokens and cost of a span's subtree (the span and all its descendants)."""

    model_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    """The cost of the calls with a known price."""
    unpriced_calls: int = 0
    """Model calls whose price is unknown (their tokens count, their dollars do not)."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            model_calls=self.model_calls + other.model_calls,
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cost_usd=self.cost_usd + other.cost_usd,
            unpriced_calls=self.unpriced_calls + other.unpriced_calls,
        )


@dataclass(frozen=True)
class Span:
    """One run or one step, with its place in the trace and what it did."""

    trace_id: str
    """32 hex digits, the same for every span of a run and its descendants."""
    span_id: str
    """16 hex digits, from `run_id:seq` (seq 0: the run's own span)."""
    parent_span_id: str | None
    name: str
    """Named as the GenAI conventions name spans (`chat <model>`, `execute_tool <tool>`,
    `invoke_agent <agent>`), else the workflow (a run) or the journal step name."""
    kind: SpanKind
    operation: Operation | None
    run_id: str
    seq: int | None
    """The step's seq in its run's journal; None for a run's span."""
    tenant: str
    workflow: str
    """The workflow of the run the span belongs to (`agent:<name>` for an agent run)."""
    journal_name: str
    """The step's name in the journal (the workflow, for a run's span)."""
    journal_status: str
    """The run's or the step's status as journaled (`succeeded`, `waiting`, `started`…)."""
    status: SpanStatus
    started_at: float
    finished_at: float | None
    agent: str | None = None
    request_model: str | None = None
    """The model asked first (before any fallback answered)."""
    response_model: str | None = None
    finish_reason: str | None = None
    tool: str | None = None
    call_id: str | None = None
    child_run_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    """A model step's cost in USD (None: not a model call, or its price is unknown)."""
    error: SpanError | None = None
    attempts: tuple[Mapping[str, Any], ...] = ()
    """Failed attempts before the step's outcome (retries): `attempt`, `at`, `error`…"""
    children: tuple[Span, ...] = ()
    totals: Totals = field(default_factory=Totals)

    @property
    def duration(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(self.finished_at - self.started_at, 0.0)

    def walk(self) -> Iterator[Span]:
        """This span and every descendant, depth first, parents before children."""
        yield self
        for child in self.children:
            yield from child.walk()

    def to_json(self) -> dict[str, Any]:
        """The span and its subtree as JSON (for `corral runs trace --json`)."""
        return {
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "name": self.name,
            "kind": self.kind,
            "operation": self.operation,
            "run_id": self.run_id,
            "seq": self.seq,
            "tenant": self.tenant,
            "workflow": self.workflow,
            "journal_name": self.journal_name,
            "journal_status": self.journal_status,
            "status": self.status,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration": self.duration,
            "agent": self.agent,
            "request_model": self.request_model,
            "response_model": self.response_model,
            "finish_reason": self.finish_reason,
            "tool": self.tool,
            "call_id": self.call_id,
            "child_run_id": self.child_run_id,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": self.cost_usd,
            "error": None
            if self.error is None
            else {"code": self.error.code, "type": self.error.type, "message": self.error.message},
            "attempts": [dict(attempt) for attempt in self.attempts],
            "totals": {
                "model_calls": self.totals.model_calls,
                "input_tokens": self.totals.input_tokens,
                "output_tokens": self.totals.output_tokens,
                "cost_usd": self.totals.cost_usd,
                "unpriced_calls": self.totals.unpriced_calls,
            },
            "children": [child.to_json() for child in self.children],
        }


def trace_id_for(root_run_id: str) -> str:
    """The trace id of a run tree: 16 bytes of SHA-256 of its root run's id, as hex."""
    return _nonzero(hashlib.sha256(root_run_id.encode()).digest()[:16])


def span_id_for(run_id: str, seq: int | None) -> str:
    """The span id of a step (`run_id:seq`) or of a run (seq None, as `run_id:0`), as hex."""
    return _nonzero(hashlib.sha256(f"{run_id}:{seq or 0}".encode()).digest()[:8])


def build_trace(
    view: RunView, *, root_run_id: str | None = None, parent_span_id: str | None = None
) -> Span:
    """The span tree of a run and the descendants loaded in `view`.

    Args:
        view: The run, as `load_run_view` loads it (with its descendants, to nest them).
        root_run_id: The run at the top of the tree `view` belongs to, which names the trace;
            by default `view`'s own run (right when it has no parent).
        parent_span_id: The span the run's span hangs under (its parent's `child.start` step),
            when `view` is a child run traced on its own.
    """
    trace_id = trace_id_for(root_run_id or view.run_id)
    return _with_totals(_run_span(view, trace_id, parent_span_id))


async def load_trace(store: Store, run_id: str) -> Span | None:
    """The span tree of a run and its descendants, with the ids it has in its root's trace
    (a child run traced on its own hangs under its parent's `child.start` span); None if the
    run is unknown."""
    view = await load_run_view(store, run_id)
    if view is None:
        return None
    root_run_id, parent_span_id = run_id, None
    run = view.run
    if run.parent_run_id is not None and run.parent_step_seq is not None:
        parent_span_id = span_id_for(run.parent_run_id, run.parent_step_seq)
    # Walk up to the root: one lookup per ancestor, a handful at most.
    seen = {run_id}
    while run.parent_run_id is not None and run.parent_run_id not in seen:
        parent = await store.get_run(run.parent_run_id)
        if parent is None:
            break
        seen.add(parent.run_id)
        root_run_id, run = parent.run_id, parent
    return build_trace(view, root_run_id=root_run_id, parent_span_id=parent_span_id)


# -- building ----------------------------------------------------------------------------------


def _run_span(view: RunView, trace_id: str, parent_span_id: str | None) -> Span:
    run = view.run
    span_id = span_id_for(run.run_id, None)
    agent = _agent_of(run.workflow)
    steps = [_step_span(view, step, trace_id, span_id) for step in view.steps]
    steps = _with_delegations(view, steps)
    finished = run.status in FINISHED_STATUSES
    error = _decoded_error(run.error) if run.status in _FAILED_RUN else None
    return Span(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=f"invoke_agent {agent}" if agent else run.workflow,
        kind="run",
        operation="invoke_agent" if agent else None,
        run_id=run.run_id,
        seq=None,
        tenant=run.tenant,
        workflow=run.workflow,
        journal_name=run.workflow,
        journal_status=run.status,
        status="error" if run.status in _FAILED_RUN else "ok" if finished else "unset",
        started_at=run.created_at,
        finished_at=run.updated_at if finished else None,
        agent=agent,
        error=error,
        children=tuple(steps),
    )


def _step_span(view: RunView, step: StepView, trace_id: str, run_span_id: str) -> Span:
    run = view.run
    span_id = span_id_for(step.run_id, step.seq)
    status: SpanStatus = (
        "ok" if step.status == "succeeded" else "error" if step.status == "failed" else "unset"
    )
    common: dict[str, Any] = {
        "trace_id": trace_id,
        "span_id": span_id,
        "parent_span_id": run_span_id,
        "kind": step.category,
        "run_id": step.run_id,
        "seq": step.seq,
        "tenant": run.tenant,
        "workflow": run.workflow,
        "journal_name": step.name,
        "journal_status": step.status,
        "status": status,
        "started_at": step.started_at,
        "finished_at": step.finished_at,
        "error": SpanError.of(step.error) if step.error and step.status == "failed" else None,
        "attempts": tuple(step.attempts),
    }
    children: tuple[Span, ...] = ()
    child = view.children.get(step.seq)
    if child is not None:
        children = (_run_span(child, trace_id, span_id),)
    if step.category == "model":
        usage = step.usage
        response_model = step.model
        request_model = _request_model(step) or response_model
        return Span(
            name=f"chat {request_model}" if request_model else "chat",
            operation="chat",
            agent=step.agent,
            request_model=request_model,
            response_model=response_model,
            finish_reason=_finish_reason(step),
            input_tokens=usage.input_tokens if usage else 0,
            output_tokens=usage.output_tokens if usage else 0,
            cost_usd=step.cost_usd,
            **common,
        )
    if step.category == "tool":
        call = step.call or {}
        return Span(
            name=f"execute_tool {step.tool}",
            operation="execute_tool",
            tool=step.tool,
            call_id=str(call["call_id"]) if call.get("call_id") else None,
            **common,
        )
    kind = step.record.kind
    return Span(
        name=step.name if kind in ("step", step.name) else f"{kind} {step.name}",
        operation=None,
        agent=step.agent,
        tool=step.tool,
        child_run_id=step.child_run_id,
        children=children,
        **common,
    )


def _with_delegations(view: RunView, spans: list[Span]) -> list[Span]:
    """Name the agent behind each tool span, and recognise the `child.start` steps that carry
    out a model's `ask_<agent>` call: a delegation is a tool call from the model's side."""
    agent = _agent_of(view.run.workflow)
    pending: deque[dict[str, Any]] = deque()
    out: list[Span] = []
    for step, span in zip(view.steps, spans, strict=True):
        if step.category == "model":
            agent = step.agent or agent
            message = step.message or {}
            calls = message.get("tool_calls")
            pending = deque(dict(c) for c in calls or () if isinstance(c, Mapping))
            out.append(span)
            continue
        if step.category == "tool":
            _take(pending, str(step.tool))
            out.append(replace(span, agent=agent))
            continue
        if step.record.kind == "child.start" and step.name.startswith("agent:"):
            call = _take(pending, f"ask_{step.name.removeprefix('agent:')}")
            if call is not None:
                tool = str(call.get("name"))
                out.append(
                    replace(
                        span,
                        name=f"execute_tool {tool}",
                        operation="execute_tool",
                        agent=agent,
                        tool=tool,
                        call_id=str(call.get("call_id")) if call.get("call_id") else None,
                    )
                )
                continue
        out.append(span)
    return out


def _take(pending: deque[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The first pending call of `name`, removed from `pending` (calls run in the model's
    order, each taking its step number when dispatched)."""
    for index, call in enumerate(pending):
        if call.get("name") == name:
            del pending[index]
            return call
    return None


def _with_totals(span: Span) -> Span:
    """`span` and its subtree, each span with its subtree's totals (a model step counts once:
    in its own span, and through it in each ancestor's)."""
    children = tuple(_with_totals(child) for child in span.children)
    own = Totals()
    if span.operation == "chat" and span.journal_status == "succeeded":
        own = Totals(
            model_calls=1,
            input_tokens=span.input_tokens,
            output_tokens=span.output_tokens,
            cost_usd=span.cost_usd or 0.0,
            unpriced_calls=1 if span.cost_usd is None else 0,
        )
    totals = own
    for child in children:
        totals = totals + child.totals
    return replace(span, children=children, totals=totals)


def _agent_of(workflow: str) -> str | None:
    return workflow.removeprefix("agent:") if workflow.startswith("agent:") else None


def _request_model(step: StepView) -> str | None:
    """The model asked first: the first one a fallback passed over (`openai:gpt-4o:
    circuit_open`), else — for a failed call — the model its error names."""
    if isinstance(step.result, Mapping):
        fallbacks = step.result.get("fallbacks")
        if isinstance(fallbacks, list) and fallbacks:
            return str(fallbacks[0]).rpartition(": ")[0] or None
    if step.error and step.error.get("model"):
        return str(step.error["model"])
    return None


def _finish_reason(step: StepView) -> str | None:
    if isinstance(step.result, Mapping) and step.result.get("finish_reason"):
        return str(step.result["finish_reason"])
    return None


def _decoded_error(text: str | None) -> SpanError | None:
    if not text:
        return None
    try:
        payload = json.loads(text)
    except ValueError:
        return SpanError(code="error", type="Error", message=text)
    if isinstance(payload, Mapping):
        return SpanError.of(payload)
    return SpanError(code="error", type="Error", message=str(payload))


def _nonzero(digest: bytes) -> str:
    # An all-zero id is invalid in OpenTelemetry; a SHA-256 prefix of zeros is not going to
    # happen, but an invalid id must not be possible.
    return digest.hex() if any(digest) else (b"\x00" * (len(digest) - 1) + b"\x01").hex()


__all__ = [
    "Operation",
    "Span",
    "SpanError",
    "SpanKind",
    "SpanStatus",
    "Totals",
    "build_trace",
    "load_trace",
    "span_id_for",
    "trace_id_for",
]
