"""The JSON shapes of the observe, policy, governance and workflow routes.

Like `shapes`, every answer is a pydantic model so the published OpenAPI describes it, and they
follow the CLI's `--json` shapes (`corral runs trace|summary|diff|compare --json`, `corral costs
--json`, `corral policy … --json`, `corral audit verify --json`, `corral breakers --json`):
timestamps are ISO 8601 in UTC, and text that may quote a payload (snippets, summaries, diffs,
error messages) is redacted as `CORRAL_REDACT` says.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from corral.governance.decisions import Decision as PolicyDecision
from corral.governance.documents import ApprovalSpec, PolicyDocument
from corral.governance.pauses import Pause
from corral.governance.policy_store import PolicySummary, PolicyVersion, StoredPolicy
from corral.governance.policy_tests import Case, CaseResult, Expectation
from corral.governance.redaction import Redactor
from corral.governance.verify import VerifyReport
from corral.observe.compare import Divergence, StepSide, render_divergence
from corral.observe.costs import CostDimension, CostRow, RunCost
from corral.observe.search import SearchHit
from corral.observe.traces import Span, Totals
from corral.reliability.breaker_store import BreakerRow
from corral.server.shapes import moment


@functools.lru_cache(maxsize=4)
def _redactor_for(setting: str) -> Redactor:
    return Redactor.from_settings({"CORRAL_REDACT": setting})


def redactor() -> Redactor:
    """The redactor `CORRAL_REDACT` configures (the one `shapes.payload` redacts with)."""
    return _redactor_for(os.environ.get("CORRAL_REDACT", ""))


def _at(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC)


# -- traces --------------------------------------------------------------------------------------


class TotalsOut(BaseModel):
    """Tokens and cost of a span's subtree: the span and everything under it, each call once."""

    model_calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float = Field(description="The cost of the calls with a known price.")
    unpriced_calls: int = Field(description="Calls whose price is unknown (tokens only).")

    @staticmethod
    def of(totals: Totals) -> TotalsOut:
        return TotalsOut(
            model_calls=totals.model_calls,
            input_tokens=totals.input_tokens,
            output_tokens=totals.output_tokens,
            total_tokens=totals.total_tokens,
            cost_usd=totals.cost_usd,
            unpriced_calls=totals.unpriced_calls,
        )


class SpanErrorOut(BaseModel):
    code: str
    type: str
    message: str


class SpanOut(BaseModel):
    """A run or a step of the trace, with the spans under it (`children`)."""

    span_id: str
    parent_span_id: str | None = None
    name: str = Field(description="`chat <model>`, `execute_tool <tool>`, `invoke_agent <agent>`…")
    kind: str = Field(description="`run`, or the step's category (`model`, `tool`, `child`…).")
    operation: str | None = None
    run_id: str
    seq: int | None = Field(default=None, description="The step's seq; null for a run's span.")
    workflow: str
    journal_name: str
    journal_status: str
    status: Literal["ok", "error", "unset"]
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    duration: float | None = Field(default=None, description="Seconds; null while in progress.")
    agent: str | None = None
    request_model: str | None = None
    response_model: str | None = None
    finish_reason: str | None = None
    tool: str | None = None
    call_id: str | None = None
    child_run_id: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = Field(default=None, description="A model call's own cost.")
    error: SpanErrorOut | None = None
    attempts: list[Any] = Field(default_factory=list, description="Failed attempts (retries).")
    totals: TotalsOut
    children: list[SpanOut] = Field(default_factory=list)

    @staticmethod
    def of(span: Span) -> SpanOut:
        redact = redactor()
        error = None
        if span.error is not None:
            error = SpanErrorOut(
                code=span.error.code,
                type=span.error.type,
                message=redact.redact_text(span.error.message),
            )
        return SpanOut(
            span_id=span.span_id,
            parent_span_id=span.parent_span_id,
            name=span.name,
            kind=span.kind,
            operation=span.operation,
            run_id=span.run_id,
            seq=span.seq,
            workflow=span.workflow,
            journal_name=span.journal_name,
            journal_status=span.journal_status,
            status=span.status,
            started_at=_at(span.started_at),
            finished_at=moment(span.finished_at),
            duration=span.duration,
            agent=span.agent,
            request_model=span.request_model,
            response_model=span.response_model,
            finish_reason=span.finish_reason,
            tool=span.tool,
            call_id=span.call_id,
            child_run_id=span.child_run_id,
            input_tokens=span.input_tokens,
            output_tokens=span.output_tokens,
            cost_usd=span.cost_usd,
            error=error,
            attempts=[redact.redact_json(dict(attempt)) for attempt in span.attempts],
            totals=TotalsOut.of(span.totals),
            children=[SpanOut.of(child) for child in span.children],
        )


class TraceOut(BaseModel):
    """A run as a tree of spans: the run, its steps, its child runs under the steps that
    started them (the OpenTelemetry GenAI conventions' names)."""

    run_id: str
    trace_id: str
    spans: int = Field(description="How many spans the tree holds.")
    duration: float | None = Field(description="The run's seconds; null while in progress.")
    totals: TotalsOut
    root: SpanOut


# -- summaries, diffs, comparisons -------------------------------------------------------------


class SummaryCost(BaseModel):
    text: str
    usd: float
    tokens: int
    unpriced_calls: int


class SummaryOut(BaseModel):
    """A run told in plain language, built from its journal the same way every time."""

    run_id: str
    workflow: str
    status: str
    runs: list[str] = Field(description="The run and its descendants, parents first.")
    asked: str
    agents: list[str]
    decisions: list[str]
    tools: list[str]
    approvals: list[str]
    cost: SummaryCost
    outcome: str
    text: str = Field(description="The whole account, as `corral runs summary` prints it.")


class ToolCallOut(BaseModel):
    call_id: str
    name: str
    arguments: Any = None


class MessageOut(BaseModel):
    role: str
    content: Any = None
    author: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCallOut] = Field(default_factory=list)


class MessagesChange(BaseModel):
    before: int = Field(description="Messages in the conversation just before the step.")
    added: list[MessageOut]
    changed: list[MessageOut] = Field(description="Always empty: the loop only appends.")
    removed: list[MessageOut] = Field(description="Always empty: the loop only appends.")


class MemoryChange(BaseModel):
    changes: list[Any]
    note: str


class StepDiffOut(BaseModel):
    """What one step changed in its run's conversation and memory."""

    run_id: str
    seq: int
    name: str
    category: str
    agent: str | None = None
    messages: MessagesChange
    memory: MemoryChange
    notes: list[str]


class StepSideOut(BaseModel):
    """One run's side of a divergence: its step, payloads decoded."""

    run_id: str
    seq: int
    kind: str
    name: str
    status: str
    arguments: Any = None
    result: Any = None
    error: dict[str, Any] | None = None

    @staticmethod
    def of(side: StepSide | None) -> StepSideOut | None:
        if side is None:
            return None
        redact = redactor()
        error = side.error
        if error is not None:
            error = {k: v for k, v in error.items() if k not in ("traceback", "module")}
        return StepSideOut(
            run_id=side.run_id,
            seq=side.seq,
            kind=side.kind,
            name=side.name,
            status=side.status,
            arguments=redact.redact_json(side.arguments),
            result=redact.redact_json(side.result),
            error=redact.redact_json(error),
        )


class DivergenceOut(BaseModel):
    """Where two runs of one workflow first differ (`aspect`, `position`), or that they do not
    (`identical`); `inner` follows a divergence at a child run into the two child runs."""

    run_a: str
    run_b: str
    workflow: str
    versions: list[str]
    statuses: list[str]
    identical: bool
    aspect: Literal["step", "arguments", "result", "missing", "outcome"] | None = None
    position: int | None = Field(default=None, description="1-based place in the journals.")
    steps_compared: int
    a: StepSideOut | None = None
    b: StepSideOut | None = None
    inner: DivergenceOut | None = None
    text: str = Field(description="The divergence in words, as `corral runs compare` says it.")

    @staticmethod
    def of(divergence: Divergence) -> DivergenceOut:
        inner = divergence.inner
        return DivergenceOut(
            run_a=divergence.run_a,
            run_b=divergence.run_b,
            workflow=divergence.workflow,
            versions=list(divergence.versions),
            statuses=list(divergence.statuses),
            identical=divergence.identical,
            aspect=divergence.aspect,
            position=divergence.position,
            steps_compared=divergence.steps_compared,
            a=StepSideOut.of(divergence.a),
            b=StepSideOut.of(divergence.b),
            inner=None if inner is None else DivergenceOut.of(inner),
            text=redactor().redact_text(render_divergence(divergence)),
        )


# -- costs and search ----------------------------------------------------------------------------


class CostRowOut(BaseModel):
    """The model calls under one key (an agent, a workflow, a user, a model, a run)."""

    key: str | None = Field(description="null: calls of runs nobody was recorded starting.")
    runs: int | None = Field(
        description="Runs with a call under the key (null in a total where runs do not add up)."
    )
    model_calls: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cost_usd: float
    unpriced_calls: int

    @staticmethod
    def of(row: CostRow, *, runs: bool = True) -> CostRowOut:
        return CostRowOut(
            key=row.key,
            runs=row.runs if runs else None,
            model_calls=row.model_calls,
            input_tokens=row.input_tokens,
            output_tokens=row.output_tokens,
            total_tokens=row.total_tokens,
            cost_usd=row.cost_usd,
            unpriced_calls=row.unpriced_calls,
        )


class RunCostOut(BaseModel):
    """What a run's tree cost: its own calls and every descendant's, each once."""

    run_id: str
    total: CostRowOut
    own: CostRowOut
    by_run: list[CostRowOut]
    by_agent: list[CostRowOut]
    by_model: list[CostRowOut]

    @staticmethod
    def of(cost: RunCost) -> RunCostOut:
        return RunCostOut(
            run_id=cost.run_id,
            total=CostRowOut.of(cost.total),
            own=CostRowOut.of(cost.own),
            by_run=[CostRowOut.of(row) for row in cost.by_run],
            by_agent=[CostRowOut.of(row) for row in cost.by_agent],
            by_model=[CostRowOut.of(row) for row in cost.by_model],
        )


class CostReportOut(BaseModel):
    """The tenant's model calls grouped by `by`, most expensive first, and their total."""

    by: CostDimension
    tenant: str
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    rows: list[CostRowOut]
    total: CostRowOut


class SearchHitOut(BaseModel):
    """A run that matched, and where in its journal it matched best."""

    run_id: str
    workflow: str
    status: str
    created_at: dt.datetime
    seq: int | None = Field(default=None, description="The step; null: the run's own payload.")
    step_name: str | None = None
    field: Literal["input", "output", "arguments", "error"]
    where: str = Field(description="`step 4 tool:refund (error)`, or `run (input)`.")
    snippet: str = Field(description="Text around the match, matched words between « and ».")

    @staticmethod
    def of(hit: SearchHit) -> SearchHitOut:
        return SearchHitOut(
            run_id=hit.run_id,
            workflow=hit.workflow,
            status=hit.status,
            created_at=_at(hit.created_at),
            seq=hit.seq,
            step_name=hit.step_name,
            field=hit.field,
            where=hit.where,
            snippet=redactor().redact_text(hit.snippet),
        )


class SearchOut(BaseModel):
    query: str
    hits: list[SearchHitOut] = Field(description="The newest matching runs first.")


# -- policies -----------------------------------------------------------------------------------


class PolicyOut(BaseModel):
    """A policy at its active (latest) version."""

    name: str
    version: int = Field(description="The active version.")
    versions: int = Field(description="How many versions exist (rollbacks included).")
    description: str
    digest: str
    created_at: dt.datetime
    created_by: str
    restored_from: int | None = None

    @staticmethod
    def of(summary: PolicySummary) -> PolicyOut:
        return PolicyOut(
            name=summary.name,
            version=summary.version,
            versions=summary.versions,
            description=summary.description,
            digest=summary.digest,
            created_at=_at(summary.created_at),
            created_by=summary.created_by,
            restored_from=summary.restored_from,
        )


class PolicyVersionOut(BaseModel):
    name: str
    version: int
    active: bool
    digest: str
    created_at: dt.datetime
    created_by: str
    restored_from: int | None = Field(default=None, description="A rollback: the version copied.")

    @staticmethod
    def of(version: PolicyVersion, *, latest: int) -> PolicyVersionOut:
        return PolicyVersionOut(
            name=version.name,
            version=version.version,
            active=version.version == latest,
            digest=version.digest,
            created_at=_at(version.created_at),
            created_by=version.created_by,
            restored_from=version.restored_from,
        )


class PolicyDetailOut(BaseModel):
    """One version of a policy: its YAML exactly as applied, and what it says, parsed."""

    name: str
    version: int
    latest_version: int
    active: bool
    digest: str
    created_at: dt.datetime
    created_by: str
    restored_from: int | None = None
    document: str = Field(description="The YAML text, exactly as applied.")
    parsed: PolicyDocument | None = Field(
        description="The document's rules and budgets; null if it no longer parses."
    )
    parse_error: str | None = None

    @staticmethod
    def of(
        stored: StoredPolicy, parsed: PolicyDocument | None, parse_error: str | None
    ) -> PolicyDetailOut:
        return PolicyDetailOut(
            name=stored.name,
            version=stored.version,
            latest_version=stored.latest_version,
            active=stored.version == stored.latest_version,
            digest=stored.digest,
            created_at=_at(stored.created_at),
            created_by=stored.created_by,
            restored_from=stored.restored_from,
            document=stored.document,
            parsed=parsed,
            parse_error=parse_error,
        )


class PolicyDiffOut(BaseModel):
    name: str
    from_version: int
    to_version: int
    same: bool
    diff: str = Field(description="A unified diff of the two texts (empty when the same).")


DOCUMENT_CHARS = 64_000
"""The longest policy document accepted (escaped as JSON, it stays under the body limit)."""

PolicyText = Annotated[str, Field(max_length=DOCUMENT_CHARS)]


class ApplyPolicy(BaseModel):
    """A policy document to apply: the YAML text of `corral policy apply FILE`."""

    model_config = ConfigDict(extra="forbid", strict=True)

    document: str = Field(min_length=1, max_length=DOCUMENT_CHARS, description="The YAML text.")
    source: str = Field(
        default="document",
        min_length=1,
        max_length=200,
        description="Where the text comes from (a file name): errors and the audit name it.",
    )


class RollbackPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    version: int = Field(ge=1, description="The version whose text becomes active again.")


class AppliedOut(BaseModel):
    """The active version after an apply or a rollback; `changed` false when it was already
    that text (no version was added)."""

    name: str
    version: int
    changed: bool
    restored_from: int | None = None


class PolicyTestRequest(BaseModel):
    """Cases to run, as in a `corral policy test` file: against `policies` (YAML texts, none
    stored), or without it against the tenant's active policies."""

    model_config = ConfigDict(extra="forbid", strict=True)

    cases: list[Case] = Field(min_length=1, max_length=500)
    policies: list[PolicyText] | None = Field(
        default=None,
        max_length=50,
        description="Policy documents (YAML) to test instead of the tenant's active ones.",
    )


class PolicyDecisionOut(BaseModel):
    """What the policies decided about a call, and which policy, version and rule decided."""

    effect: Literal["allow", "deny", "require_approval"]
    reason: str
    policy: str | None = None
    version: int | None = None
    rule: str | None = None
    approval: ApprovalSpec | None = None
    timeout: float | None = Field(default=None, description="Seconds the call may take.")

    @staticmethod
    def of(decision: PolicyDecision) -> PolicyDecisionOut:
        return PolicyDecisionOut.model_validate(decision.model_dump())


class CaseOut(BaseModel):
    name: str
    passed: bool
    expected: Expectation
    decision: PolicyDecisionOut
    problems: list[str] = Field(description="What differs from the expectation.")

    @staticmethod
    def of(result: CaseResult) -> CaseOut:
        return CaseOut(
            name=result.case.name,
            passed=result.passed,
            expected=result.case.expect,
            decision=PolicyDecisionOut.of(result.decision),
            problems=result.problems,
        )


class PolicyTestOut(BaseModel):
    passed: int
    failed: int
    cases: list[CaseOut]


# -- governance ---------------------------------------------------------------------------------


class ChainHead(BaseModel):
    seq: int
    hash: str


class ChainProblem(BaseModel):
    """The first thing found wrong in the chain."""

    seq: int | None = Field(description="The entry it is about.")
    reason: str
    kind: str | None = None
    at: str | None = Field(default=None, description="The entry's time (ISO 8601).")


class AuditVerification(BaseModel):
    """The outcome of verifying the tenant's audit chain: `ok`, or the first bad entry."""

    tenant: str
    ok: bool
    entries_checked: int
    head: ChainHead
    first_bad: ChainProblem | None = None
    checkpoints_checked: int
    signatures_verified: int
    latest_verified_checkpoint: int | None = None
    warnings: list[str]
    message: str

    @staticmethod
    def of(report: VerifyReport) -> AuditVerification:
        bad = report.first_bad
        return AuditVerification(
            tenant=report.tenant,
            ok=report.ok,
            entries_checked=report.entries_checked,
            head=ChainHead(seq=report.head_seq, hash=report.head_hash),
            first_bad=None if bad is None else ChainProblem(**bad.to_json()),
            checkpoints_checked=report.checkpoints_checked,
            signatures_verified=report.signatures_verified,
            latest_verified_checkpoint=report.latest_verified_checkpoint,
            warnings=list(report.warnings),
            message=report.describe(),
        )


PAUSE_TARGET = r"^(tenant|agent:[A-Za-z0-9_-]{1,48})$"
"""A kill switch's target: the whole tenant, or one agent."""


class PauseIn(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    target: str = Field(
        pattern=PAUSE_TARGET,
        description="`tenant` (every tool call of the tenant) or `agent:<name>`.",
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why (kept in the audit).")


class PauseOut(BaseModel):
    """A kill switch that is set: no tool call of its target starts."""

    target: str
    paused_at: dt.datetime
    paused_by: str
    reason: str

    @staticmethod
    def of(pause: Pause) -> PauseOut:
        return PauseOut(
            target=pause.target,
            paused_at=_at(pause.paused_at),
            paused_by=pause.paused_by,
            reason=pause.reason,
        )


class BreakerOut(BaseModel):
    """One worker's circuit breaker for one dependency, as last published."""

    dependency: str
    worker: str
    state: Literal["closed", "open", "half_open"]
    since: dt.datetime
    calls: int
    failures: int
    failure_rate: float
    opened_count: int
    updated_at: dt.datetime
    stale: bool = Field(description="Not published for a while: its worker has likely stopped.")

    @staticmethod
    def of(row: BreakerRow, *, stale: bool) -> BreakerOut:
        return BreakerOut(
            dependency=row.dependency,
            worker=row.worker,
            state=row.state,
            since=_at(row.since),
            calls=row.calls,
            failures=row.failures,
            failure_rate=round(row.failure_rate, 4),
            opened_count=row.opened_count,
            updated_at=_at(row.updated_at),
            stale=stale,
        )


class BreakersOut(BaseModel):
    breakers: list[BreakerOut]
    stale_hidden: int = Field(description="Stale rows left out (`include_stale=true` shows them).")


# -- workflows ----------------------------------------------------------------------------------


class AgentOut(BaseModel):
    """What an agent is made of (its instructions are not shown)."""

    name: str
    model: str | None = Field(description="`provider:name`; null: the default model.")
    tools: list[str]
    handoffs: list[str]
    delegates: list[str]
    scopes: list[str]
    max_turns: int


class WorkflowOut(BaseModel):
    """A workflow (or an agent's own workflow, `agent:<name>`) this server can start runs of."""

    name: str
    kind: Literal["agent", "workflow"]
    version: str = Field(description="The version new runs start on.")
    versions: list[str] = Field(description="Every version the server was given.")
    description: str | None = None
    timeout: float | None = Field(default=None, description="A run's deadline, in seconds.")


class WorkflowDetailOut(WorkflowOut):
    input_schema: dict[str, Any] | None = Field(
        default=None, description="JSON Schema of the input; null if it has none."
    )
    output_schema: dict[str, Any] | None = None
    agent: AgentOut | None = None


__all__ = [
    "PAUSE_TARGET",
    "AgentOut",
    "AppliedOut",
    "ApplyPolicy",
    "AuditVerification",
    "BreakerOut",
    "BreakersOut",
    "CaseOut",
    "CostReportOut",
    "CostRowOut",
    "DivergenceOut",
    "MessageOut",
    "PauseIn",
    "PauseOut",
    "PolicyDecisionOut",
    "PolicyDetailOut",
    "PolicyDiffOut",
    "PolicyOut",
    "PolicyTestOut",
    "PolicyTestRequest",
    "PolicyVersionOut",
    "RollbackPolicy",
    "RunCostOut",
    "SearchHitOut",
    "SearchOut",
    "SpanOut",
    "StepDiffOut",
    "StepSideOut",
    "SummaryOut",
    "TotalsOut",
    "TraceOut",
    "WorkflowDetailOut",
    "WorkflowOut",
    "redactor",
]
