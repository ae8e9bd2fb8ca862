"""Run divergence: where two runs of the same workflow first went different ways.

Two runs are compared step by step in journal order. For each pair of steps, in this order:

1. **step** — the kind and name (a different tool, a model step against a tool step);
2. **arguments** — what the step was called with: a tool call's arguments (and approved ones),
   a child run's input, any other step's recorded input;
3. **result** — the status, the result and the error (a model's answer: its text, the tools it
   called and the model that answered).

The first pair that differs is the divergence; when one journal is a prefix of the other, it is
the first step the shorter run lacks (**missing**); when every step matches, the runs' outcomes
(status, result, error) are compared (**outcome**). A divergence at a delegated child run is
followed into the two child runs (`inner`).

What cannot differ meaningfully is ignored: timestamps, token usage, call ids, and the ids each
run generates for itself (its run id, its child runs' ids, its approvals' ids), which are
replaced by placeholders before comparing. Retries (attempts) are not compared either.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from corral.errors import UsageError
from corral.observe.journal_view import RunView, StepView

Aspect = Literal["step", "arguments", "result", "missing", "outcome"]

_VOLATILE = frozenset(
    {
        "approval_id",
        "call_id",
        "created_at",
        "deadline",
        "decided_at",
        "escalated_until",
        "module",
        "run_id",
        "step_seq",
        "tool_call_id",
        "traceback",
        "usage",
    }
)
"""Keys whose values differ between any two runs (ids, times, token counts, tracebacks)."""

_IN_ORDER: tuple[Aspect, ...] = ("step", "arguments", "result")


@dataclass(frozen=True)
class StepSide:
    """One run's side of a divergence: its step as journaled (payloads decoded)."""

    run_id: str
    seq: int
    kind: str
    name: str
    status: str
    arguments: Any
    result: Any
    error: dict[str, Any] | None


@dataclass(frozen=True)
class Divergence:
    """Where runs `run_a` and `run_b` first differ, or that they do not."""

    run_a: str
    run_b: str
    workflow: str
    versions: tuple[str, str]
    statuses: tuple[str, str]
    steps_compared: int
    """Pairs of steps found equal before the divergence (all of them when identical)."""
    aspect: Aspect | None = None
    """None: the runs are identical (same steps, same outcome)."""
    position: int | None = None
    """1-based position in the journals of the first difference (None: outcome or identical)."""
    a: StepSide | None = None
    b: StepSide | None = None
    inner: Divergence | None = None
    """The divergence inside the two child runs, when the runs differ at a child run."""

    @property
    def identical(self) -> bool:
        return self.aspect is None


def compare_runs(a: RunView, b: RunView) -> Divergence:
    """The first difference between two runs of one workflow (their child runs loaded for a
    divergence inside them).

    Raises:
        UsageError: the runs are of different workflows.
    """
    if a.run.workflow != b.run.workflow:
        raise UsageError(
            f"runs {a.run_id} ({a.run.workflow}) and {b.run_id} ({b.run.workflow}) are of "
            "different workflows: only runs of the same workflow can be compared",
            run_a=a.run_id,
            run_b=b.run_id,
        )
    ids_a, ids_b = _placeholders(a), _placeholders(b)

    def found(steps: int, aspect: Aspect | None = None, **where: Any) -> Divergence:
        return Divergence(
            run_a=a.run_id,
            run_b=b.run_id,
            workflow=a.run.workflow,
            versions=(a.run.workflow_version, b.run.workflow_version),
            statuses=(a.run.status, b.run.status),
            steps_compared=steps,
            aspect=aspect,
            **where,
        )

    for index, (step_a, step_b) in enumerate(zip(a.steps, b.steps, strict=False)):
        for aspect in _IN_ORDER:
            if _aspect(a, step_a, aspect, ids_a) != _aspect(b, step_b, aspect, ids_b):
                return found(
                    index,
                    aspect,
                    position=index + 1,
                    a=_side(a, step_a),
                    b=_side(b, step_b),
                    inner=_inner(a, step_a, b, step_b),
                )
    shorter = min(len(a.steps), len(b.steps))
    if len(a.steps) != len(b.steps):
        return found(
            shorter,
            "missing",
            position=shorter + 1,
            a=_side(a, a.steps[shorter]) if len(a.steps) > shorter else None,
            b=_side(b, b.steps[shorter]) if len(b.steps) > shorter else None,
        )
    if _outcome(a, ids_a) != _outcome(b, ids_b):
        return found(shorter, "outcome")
    return found(shorter)


def divergence_json(divergence: Divergence) -> dict[str, Any]:
    """The JSON shape of `corral runs compare --json`."""
    return {
        "run_a": divergence.run_a,
        "run_b": divergence.run_b,
        "workflow": divergence.workflow,
        "versions": list(divergence.versions),
        "statuses": list(divergence.statuses),
        "identical": divergence.identical,
        "aspect": divergence.aspect,
        "position": divergence.position,
        "steps_compared": divergence.steps_compared,
        "a": _side_json(divergence.a),
        "b": _side_json(divergence.b),
        "inner": divergence_json(divergence.inner) if divergence.inner is not None else None,
    }


def render_divergence(divergence: Divergence) -> str:
    """The divergence as text for people: where, in what, and both sides."""
    d = divergence
    versions = d.versions[0] if d.versions[0] == d.versions[1] else "/".join(d.versions)
    head = f"runs {d.run_a} (A) and {d.run_b} (B) of {d.workflow}@{versions}"
    if d.identical:
        return (
            f"{head} are identical: {d.steps_compared} steps with the same names, arguments and "
            f"results, and the same outcome ({d.statuses[0]}); times, token usage and generated "
            "ids are not compared"
        )
    same = f"the {d.steps_compared} step(s) before are the same"
    if d.aspect == "outcome":
        return (
            f"{head}: every step is the same ({d.steps_compared}), but the outcomes differ:\n"
            f"  A: {d.statuses[0]}\n  B: {d.statuses[1]}"
        )
    what = {
        "step": "a different step",
        "arguments": "different arguments",
        "result": "a different result",
        "missing": "one run has no such step",
    }[d.aspect or "step"]
    lines = [f"{head} first differ at step {d.position}: {what} ({same})"]
    for label, side, status in (("A", d.a, d.statuses[0]), ("B", d.b, d.statuses[1])):
        if side is None:
            lines.append(f"  {label}: no step {d.position} (the run is {status})")
            continue
        lines.append(f"  {label}: step {side.seq} {side.kind} {side.name} [{side.status}]")
        if side.arguments is not None:
            lines.append(f"     arguments: {_short(side.arguments)}")
        if side.error is not None:
            lines.append(f"     error: {side.error.get('type')}: {side.error.get('message')}")
        elif side.result is not None:
            lines.append(f"     result: {_short(side.result)}")
    if d.inner is not None:
        inner = render_divergence(d.inner).splitlines()
        lines.append("  inside the child runs:")
        lines.extend(f"    {line}" for line in inner)
    return "\n".join(lines)


# -- what is compared ----------------------------------------------------------------------------


def _arguments(view: RunView, step: StepView) -> Any:
    if step.record.kind == "child.start":
        child = view.children.get(step.seq)
        return _decode(child.run.input) if child is not None else None
    if step.category == "tool":
        call = step.call
        if call is None:
            return None
        return {k: v for k, v in call.items() if k in ("arguments", "approved_arguments")}
    return step.detail.get("input")


def _result(step: StepView) -> Any:
    if step.category == "model" and isinstance(step.result, Mapping):
        message = step.message or {}
        return {
            "model": step.model,
            "content": message.get("content"),
            "tool_calls": [
                {"name": c.get("name"), "arguments": _decode(c.get("arguments"))}
                for c in message.get("tool_calls") or []
                if isinstance(c, Mapping)
            ],
            "fallbacks": step.result.get("fallbacks") or [],
        }
    return step.result


def _aspect(view: RunView, step: StepView, aspect: Aspect, ids: dict[str, str]) -> Any:
    if aspect == "step":
        return (step.record.kind, _normal(step.name, ids))
    if aspect == "arguments":
        return _normal(_arguments(view, step), ids)
    error = None
    if step.error is not None:
        error = {k: step.error.get(k) for k in ("code", "type", "message")}
    return _normal({"status": step.status, "result": _result(step), "error": error}, ids)


def _outcome(view: RunView, ids: dict[str, str]) -> Any:
    error = _decode(view.run.error)
    if isinstance(error, Mapping):
        error = {k: error.get(k) for k in ("code", "type", "message")}
    return _normal((view.run.status, _decode(view.run.result), error), ids)


def _placeholders(view: RunView) -> dict[str, str]:
    """The ids a run generated for itself, each with a placeholder naming its role and order."""
    ids = {view.run_id: "<run>"}
    approvals = children = 0
    for step in view.steps:
        child = step.child_run_id
        if child is not None and child not in ids:
            children += 1
            ids[child] = f"<child run {children}>"
        if step.category == "approval" and isinstance(step.result, Mapping):
            approval_id = step.result.get("approval_id")
            if isinstance(approval_id, str) and approval_id not in ids:
                approvals += 1
                ids[approval_id] = f"<approval {approvals}>"
    return ids


def _normal(value: Any, ids: dict[str, str]) -> Any:
    """`value` without volatile keys, with generated ids replaced by their placeholders."""
    if isinstance(value, Mapping):
        return {k: _normal(v, ids) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list | tuple):
        return [_normal(v, ids) for v in value]
    if isinstance(value, str):
        for generated, placeholder in ids.items():
            if generated in value:
                value = value.replace(generated, placeholder)
        return value
    return value


def _inner(a: RunView, step_a: StepView, b: RunView, step_b: StepView) -> Divergence | None:
    """The divergence inside the child runs two child steps stand for (started or awaited)."""
    if step_a.category != "child" or step_b.category != "child":
        return None
    child_a, child_b = _child_of(a, step_a), _child_of(b, step_b)
    if child_a is None or child_b is None or child_a.run.workflow != child_b.run.workflow:
        return None
    inner = compare_runs(child_a, child_b)
    return None if inner.identical else inner


def _child_of(view: RunView, step: StepView) -> RunView | None:
    if step.record.kind == "child.start":
        return view.children.get(step.seq)
    # A child.result belongs to the latest child.start of that workflow before it.
    starts = [
        s.seq
        for s in view.steps
        if s.record.kind == "child.start" and s.name == step.name and s.seq < step.seq
    ]
    return view.children.get(starts[-1]) if starts else None


def _side(view: RunView, step: StepView) -> StepSide:
    return StepSide(
        run_id=view.run_id,
        seq=step.seq,
        kind=step.record.kind,
        name=step.name,
        status=step.status,
        arguments=_arguments(view, step),
        result=_result(step),
        error=(
            {k: v for k, v in step.error.items() if k not in ("traceback", "module")}
            if step.error is not None
            else None
        ),
    )


def _side_json(side: StepSide | None) -> dict[str, Any] | None:
    if side is None:
        return None
    return {
        "run_id": side.run_id,
        "seq": side.seq,
        "kind": side.kind,
        "name": side.name,
        "status": side.status,
        "arguments": side.arguments,
        "result": side.result,
        "error": side.error,
    }


def _short(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = [
    "Aspect",
    "Divergence",
    "StepSide",
    "compare_runs",
    "divergence_json",
    "render_divergence",
]
