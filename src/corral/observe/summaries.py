"""Run summaries for people who do not read journals: what happened, in plain language.

A summary is built from the journal alone (and the approvals table, for who decided what), the
same way every time: the same run gives the same text. It answers, in order:

- **what was asked** — the run's input;
- **who worked on it** — the agents that made model calls, including those of delegated child
  runs (with the task they were given);
- **what they decided, and why** — the reasons agents stated (the text a model wrote alongside
  its tool calls), and the policy decisions that allowed, stopped or held a call, with the
  policy's reason;
- **what the tools changed** — each call that ran: tool, arguments and result, in words;
- **who approved what** — each approval request of the run and its children: who decided,
  when, why, and whether they edited the arguments;
- **what it cost** — the model calls' cost (genai-prices) and tokens, child runs included;
- **how it ended** — the status, with the final answer or the error in words.

`summarize(..., polish=model)` also asks a model, once, to rewrite the text for readability; the
deterministic text is kept beside it, so a reviewer can always check one against the other. The
polishing call is made by whoever asks for the summary: it is not part of any run, so it is not
journaled, and the model sees the summary's payloads.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from corral.models import Message, Model, ModelRequest
from corral.observe.diffs import agent_task, as_text
from corral.observe.journal_view import RunView, StepView
from corral.store import Store
from corral.store.scripts import Script, Statement

POLISH_INSTRUCTIONS = (
    "Rewrite this account of an automated run for a reader who is not an engineer. Keep every "
    "fact, name, amount, decision, reason and date; add nothing that is not in it; do not "
    "speculate. Use short paragraphs of plain prose, in the same order."
)

SHORT = 240
"""Characters of a payload (an input, a result, an argument) quoted in a summary."""


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval request of a run, as the approvals table holds it."""

    approval_id: str
    run_id: str
    step_seq: int
    agent: str | None
    tool: str
    arguments: Any
    reason: str
    policy: str | None
    rule: str | None
    approvers: list[str]
    status: str
    decided_by: str | None
    decided_at: float | None
    decision_reason: str | None
    edited_arguments: Any


@dataclass(frozen=True)
class RunSummary:
    """A plain-language account of a run (and its child runs)."""

    run_id: str
    workflow: str
    status: str
    asked: str
    agents: list[str]
    decisions: list[str]
    tools: list[str]
    approvals: list[str]
    cost: str
    cost_usd: float
    """The priced model calls' cost, child runs included (calls without a price add 0)."""
    unpriced_calls: int
    tokens: int
    outcome: str
    text: str
    """The whole deterministic account."""
    polished: str | None = None
    """A model's rewrite of `text` (when asked for), kept beside it."""
    polished_by: str | None = None
    runs: list[str] = field(default_factory=list)
    """The run and its descendants, parents first."""


def approvals_of(run_ids: Sequence[str]) -> Script[list[ApprovalRecord]]:
    """The approval requests of these runs, oldest first (a read script)."""
    if not run_ids:
        return []
    marks = ", ".join("?" for _ in run_ids)
    result = yield Statement(
        "SELECT approval_id, run_id, step_seq, agent, tool, arguments, reason, policy, rule,"
        " approvers, status, decided_by, decided_at, decision_reason, edited_arguments"
        f" FROM approvals WHERE run_id IN ({marks}) ORDER BY created_at, step_seq",
        tuple(run_ids),
    )
    return [
        ApprovalRecord(
            approval_id=row[0],
            run_id=row[1],
            step_seq=int(row[2]),
            agent=row[3],
            tool=row[4],
            arguments=_decode(row[5]),
            reason=row[6],
            policy=row[7],
            rule=row[8],
            approvers=list(_decode(row[9]) or []),
            status=row[10],
            decided_by=row[11],
            decided_at=None if row[12] is None else float(row[12]),
            decision_reason=row[13],
            edited_arguments=_decode(row[14]),
        )
        for row in result.rows
    ]


async def summarize(store: Store, view: RunView, *, polish: Model | None = None) -> RunSummary:
    """The summary of `view` (load it with its descendants), with its approvals read from
    `store`; with `polish`, also one model call's rewrite of the text."""
    run_ids = [run.run_id for run in view.walk()]
    approvals = await store.read_script(lambda dialect: approvals_of(run_ids))
    summary = summary_of(view, approvals)
    if polish is None:
        return summary
    response = await polish.complete(
        ModelRequest(instructions=POLISH_INSTRUCTIONS, messages=[Message.user(summary.text)])
    )
    return dataclasses.replace(summary, polished=response.message.content, polished_by=polish.name)


def summary_of(view: RunView, approvals: Sequence[ApprovalRecord] = ()) -> RunSummary:
    """The deterministic summary of `view` and its descendants (no I/O)."""
    runs = view.walk()
    steps = [step for run in runs for step in run.steps]
    models = [s for s in steps if s.category == "model" and s.status == "succeeded"]
    costs = [s.cost_usd for s in models]
    cost = sum(c for c in costs if c is not None)
    unpriced = sum(1 for c in costs if c is None)
    tokens = sum(s.usage.total_tokens for s in models if s.usage is not None)
    asked = _quote(agent_task(view.run).input, limit=SHORT * 2)
    agents = _agents(view)
    decisions = [line for run in runs for line in _decisions(run, root=run is view)]
    tools = [line for run in runs for line in _tools(run)]
    approved = [_approval(a) for a in approvals]
    delegated = len(runs) - 1
    cost_text = (
        f"${cost:.4f} for {len(models)} model call(s) ({tokens:,} tokens)"
        + (f" in {len(runs)} runs ({delegated} delegated)" if delegated else "")
        + (f"; {unpriced} call(s) have no known price and are not counted" if unpriced else "")
        + "."
    )
    outcome = _outcome(view, approvals)
    sections = [
        ("What was asked", [asked]),
        ("Who worked on it", agents or ["No agent made a model call."]),
        ("What they decided, and why", decisions or ["No decisions were recorded."]),
        ("What the tools changed", tools or ["No tool was called."]),
        ("Who approved what", approved or ["No approval was needed."]),
        ("What it cost", [cost_text]),
        ("How it ended", [outcome]),
    ]
    text = f"Run {view.run_id} ({view.run.workflow}): {view.run.status}\n"
    for title, lines in sections:
        bullet = len(lines) > 1 or title not in ("What was asked", "What it cost", "How it ended")
        text += f"\n{title}\n" + "\n".join(
            f"  - {line}" if bullet else f"  {line}" for line in lines
        )
        text += "\n"
    return RunSummary(
        run_id=view.run_id,
        workflow=view.run.workflow,
        status=view.run.status,
        asked=asked,
        agents=agents,
        decisions=decisions,
        tools=tools,
        approvals=approved,
        cost=cost_text,
        cost_usd=cost,
        unpriced_calls=unpriced,
        tokens=tokens,
        outcome=outcome,
        text=text.rstrip() + "\n",
        runs=[run.run_id for run in runs],
    )


def summary_json(summary: RunSummary) -> dict[str, Any]:
    """The JSON shape of `corral runs summary --json`."""
    return {
        "run_id": summary.run_id,
        "workflow": summary.workflow,
        "status": summary.status,
        "runs": summary.runs,
        "asked": summary.asked,
        "agents": summary.agents,
        "decisions": summary.decisions,
        "tools": summary.tools,
        "approvals": summary.approvals,
        "cost": {
            "text": summary.cost,
            "usd": round(summary.cost_usd, 6),
            "tokens": summary.tokens,
            "unpriced_calls": summary.unpriced_calls,
        },
        "outcome": summary.outcome,
        "text": summary.text,
        "polished": summary.polished,
        "polished_by": summary.polished_by,
    }


# -- sections ------------------------------------------------------------------------------------


def _model_agents(run: RunView) -> list[str]:
    names: list[str] = []
    for step in run.steps:
        if step.category == "model" and step.agent and step.agent not in names:
            names.append(step.agent)
    return names


def _agents(view: RunView) -> list[str]:
    lines: list[str] = []

    def visit(run: RunView, parent_agent: str | None) -> None:
        for name in _model_agents(run):
            calls = sum(1 for s in run.steps if s.category == "model" and s.agent == name)
            line = f"{name} ({calls} model call{'s' if calls != 1 else ''})"
            if parent_agent is not None:
                task = _quote(agent_task(run.run).input)
                line += f", on a task delegated by {parent_agent}: {task} (run {run.run_id})"
            lines.append(line)
        for seq in sorted(run.children):
            visit(run.children[seq], _agent_before(run, seq) or run.run.workflow)

    visit(view, None)
    return lines


def _agent_before(run: RunView, seq: int) -> str | None:
    """The agent whose model step came last before step `seq` (who started a child there)."""
    before = [s.agent for s in run.steps if s.seq < seq and s.category == "model" and s.agent]
    return before[-1] if before else None


def _decisions(run: RunView, *, root: bool) -> list[str]:
    lines: list[str] = []
    for step in run.steps:
        if step.category == "model" and step.message is not None:
            line = _stated(step, final=not root)
            if line:
                lines.append(line)
        elif step.category == "tool":
            line = _policy_line(step)
            if line:
                lines.append(line)
        elif step.category == "limit":
            lines.append(f"{step.subject} was stopped: {_error_words(step.error)}")
    return lines


def _stated(step: StepView, *, final: bool) -> str | None:
    """What an agent said it would do, and did: its text, then its calls."""
    message = step.message or {}
    content = str(message.get("content") or "").strip()
    calls = [c for c in message.get("tool_calls") or [] if isinstance(c, Mapping)]
    if not calls:
        # The root run's final answer is how it ended; a child's is what it concluded.
        return f"{step.agent} concluded: {_quote(content)}" if final and content else None
    actions = [_action(str(c.get("name")), _decode(c.get("arguments"))) for c in calls]
    doing = "; ".join(actions)
    if content:
        return f"{step.agent} said {_quote(content)} and {doing}."
    return f"{step.agent} {doing} (without stating a reason)."


def _action(name: str, arguments: Any) -> str:
    if name.startswith("ask_") and isinstance(arguments, Mapping) and "task" in arguments:
        return f"asked {name[4:]} to: {_quote(arguments['task'])}"
    if name.startswith("transfer_to_"):
        return f"handed the conversation to {name[len('transfer_to_') :]}"
    return f"called {name} ({_arguments(arguments)})"


def _policy_line(step: StepView) -> str | None:
    """A policy decision worth telling: one that held, denied or stopped a call."""
    call = step.call or {}
    if step.status == "failed" and step.error is not None:
        code = step.error.get("code")
        if code == "policy_denied":
            return f"{step.tool} was not called: {step.error.get('message')}"
        if code in ("budget_exceeded", "paused"):
            return f"{step.tool} was not called and the run stopped: {step.error.get('message')}"
        return None
    decision = step.decision or {}
    result = step.result if isinstance(step.result, Mapping) else {}
    if result.get("status") != "approval_required" or call.get("approval_id"):
        return None
    by, arguments = _policy_name(decision), _arguments(call.get("arguments"))
    return (
        f"{by} required a human's approval before {step.tool} ({arguments}) could run: "
        f"{decision.get('reason') or 'no reason given'}"
    )


def _policy_name(decision: Mapping[str, Any]) -> str:
    policy, version, rule = decision.get("policy"), decision.get("version"), decision.get("rule")
    if policy:
        return f"policy {policy} v{version}" + (f" (rule {rule})" if rule else "")
    if rule == "review":
        return "the tool itself"
    return f"rule {rule}" if rule else "a policy"


def _tools(run: RunView) -> list[str]:
    lines: list[str] = []
    for step in run.steps:
        if step.category != "tool":
            continue
        call = step.call or {}
        result = step.result if isinstance(step.result, Mapping) else {}
        arguments = call.get("approved_arguments", call.get("arguments"))
        if step.status == "succeeded" and result.get("status") == "done":
            approved = " (after approval)" if call.get("approval_id") else ""
            lines.append(
                f"{step.tool} was called with {_arguments(arguments)}{approved} and returned "
                f"{_result_words(result.get('value'))}"
            )
        elif step.status == "failed" and (step.error or {}).get("code") not in (
            "policy_denied",
            "budget_exceeded",
            "paused",
        ):
            lines.append(
                f"{step.tool} was called with {_arguments(arguments)} and failed: "
                f"{_error_words(step.error)}"
            )
    return lines


def _approval(approval: ApprovalRecord) -> str:
    what = (
        f"the final answer of {approval.agent}"
        if approval.tool.startswith("output_")
        else f"{approval.agent}'s call to {approval.tool} ({_arguments(approval.arguments)})"
    )
    when = _when(approval.decided_at)
    why = f": {_quote(approval.decision_reason)}" if approval.decision_reason else ""
    if approval.status == "pending":
        return f"{what} is waiting for a decision by {', '.join(approval.approvers)}"
    if approval.status == "expired":
        return f"no one decided on {what} in time; the request expired{when}"
    verb = "approved" if approval.status == "approved" else "rejected"
    edited = ""
    if approval.edited_arguments is not None:
        edited = f", changing the arguments to {_arguments(approval.edited_arguments)}"
    return f"{approval.decided_by} {verb} {what}{when}{edited}{why}"


def _outcome(view: RunView, approvals: Sequence[ApprovalRecord]) -> str:
    run = view.run
    if run.status == "succeeded":
        return f"It succeeded. The final answer: {_quote(_decode(run.result), limit=SHORT * 2)}"
    if run.status == "failed":
        return f"It failed: {_error_words(_as_dict(_decode(run.error)))}"
    if run.status == "cancelled":
        return "It was cancelled before it finished."
    if run.status == "needs_reconciliation":
        return (
            "It stopped: a call that must not be made twice was in flight when a worker "
            "stopped, so a person must check whether it took effect and reconcile the run."
        )
    pending = [a for a in approvals if a.status == "pending"]
    if run.status == "waiting" and pending:
        waits = "; ".join(f"{a.tool} by {', '.join(a.approvers)}" for a in pending)
        return f"It has not finished: it is waiting for a decision on {waits}."
    return f"It has not finished yet ({run.status})."


# -- words ---------------------------------------------------------------------------------------


def _quote(value: Any, *, limit: int = SHORT) -> str:
    text = as_text(value).strip() if value is not None else ""
    if not text:
        return "(nothing)"
    text = " ".join(text.split())
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return f'"{text}"'


def _result_words(value: Any) -> str:
    """A tool's result: text quoted, an object as its fields, anything else as JSON."""
    if isinstance(value, Mapping) and value:
        return _arguments(value)
    return _quote(value) if isinstance(value, str) else _value(value)


def _arguments(arguments: Any) -> str:
    if isinstance(arguments, Mapping):
        if not arguments:
            return "no arguments"
        return ", ".join(f"{key} {_value(value)}" for key, value in sorted(arguments.items()))
    return _value(arguments)


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    return text if len(text) <= SHORT // 2 else text[: SHORT // 2 - 1] + "…"


def _error_words(error: Mapping[str, Any] | None) -> str:
    if not error:
        return "no reason was recorded"
    message = str(error.get("message") or "").strip() or "no message"
    code = error.get("code")
    return f"{message} ({code})" if code else message


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return ""
    moment = dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)
    return f" on {moment:%Y-%m-%d at %H:%M} UTC"


def _as_dict(value: Any) -> dict[str, Any] | None:
    return dict(value) if isinstance(value, Mapping) else None


def _decode(text: Any) -> Any:
    if not isinstance(text, str):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = [
    "POLISH_INSTRUCTIONS",
    "ApprovalRecord",
    "RunSummary",
    "approvals_of",
    "summarize",
    "summary_json",
    "summary_of",
]
