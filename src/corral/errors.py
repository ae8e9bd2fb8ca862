"""Corral's errors: one root, three branches, each error carrying its ids and a stable code.

```
CorralError                         code
├── UsageError                      the caller or developer did something wrong
│   ├── UnknownWorkflow             unknown_workflow
│   ├── InvalidInput                invalid_input
│   ├── RunNotFound                 run_not_found
│   ├── RunAlreadyFinished          run_finished
│   ├── RunNotReconcilable          not_reconcilable
│   ├── NotSerializable             not_serializable
│   ├── StoreError                  store_error        (bad URL, corrupt file, not Corral's)
│   │   ├── SchemaVersionMismatch   schema_mismatch    (older: migrate it; newer: upgrade Corral)
│   │   └── StoreUnavailable        store_unavailable  (locked, unreachable)
│   ├── UnknownModel                unknown_model      (a model string with no known provider)
│   ├── ModelNotConfigured          model_not_configured (e.g. no API key: names the setting)
│   ├── ModelRequestsForbidden      model_requests_forbidden (network switched off in tests)
│   ├── UnknownTool                 unknown_tool       (a tool name an agent does not have)
│   ├── ToolArgumentsInvalid        tool_arguments_invalid (malformed JSON, failed schema)
│   ├── AgentDefinitionError        agent_definition   (a malformed agent or pattern)
│   ├── NamespaceViolation          namespace_violation (a write outside its own namespace)
│   ├── PolicyError                 policy_invalid
│   ├── ConditionError              condition_error
│   ├── PolicyNotFound              policy_not_found
│   ├── ApprovalNotFound            approval_not_found
│   ├── AlreadyDecided              already_decided
│   ├── AuditChainBroken            audit_chain_broken
│   ├── AuditLogEmpty               audit_log_empty
│   ├── AuditKeyInvalid             audit_key_invalid
│   ├── RedactionSettingInvalid     redaction_setting_invalid
│   └── NotAuthorized               not_authorized     (a principal without the role or group)
├── RunFailure                      something a run did failed; raised inside or about a run
│   ├── RunFailed                   run_failed         (waiting for a run that did not succeed)
│   ├── NonDeterminismError         non_determinism
│   ├── StepFailed                  step_failed
│   ├── ChildRunFailed              child_failed
│   ├── SignalTimeout               signal_timeout
│   ├── NeedsReconciliation         needs_reconciliation
│   ├── LeaseLost                   lease_lost
│   ├── ModelCallFailed             model_call_failed  (HTTP error, rate limit, bad response)
│   ├── ToolFailed                  tool_failed        (a tool raised; names tool and step)
│   ├── TurnLimitExceeded           turn_limit         (an agent loop hit its max_turns)
│   ├── RepeatedToolCall            repeated_tool_call (the same call made again and again)
│   ├── OutputInvalid               output_invalid     (names the agent, schema, violation)
│   ├── DepthLimitExceeded          depth_limit        (delegation nested too deep)
│   ├── NoRoute                     no_route           (a router found no route for an event)
│   ├── ApprovalRejected            approval_rejected
│   ├── BudgetExceeded              budget_exceeded
│   ├── Paused                      paused
│   ├── PolicyDenied                policy_denied      (a policy or missing scope said no)
│   ├── StepTimeout                 step_timeout       (a tool, model call or step ran too long)
│   ├── RunDeadlineExceeded         deadline_exceeded  (the run's own deadline passed)
│   ├── CircuitOpen                 circuit_open       (a dependency's breaker refuses calls)
│   ├── StepLimitExceeded           step_limit         (an agent took more than max_steps steps)
│   └── RunCancelled                cancelled          (a cancel reached a run that compensates)
└── RunSignal                       raised by steps to steer the run
    ├── ToolRetry                   tool_retry         (a tool asks the model to try again)
    ├── RetryStep                   retry_step         (a passing failure: try the step again)
    └── ApprovalRequired            approval_required  (a call waits for a human's decision)
```

Every error's `to_dict()` is what the journal stores and the CLI and API return: the `code`, the
message and the ids. The `Suspend` control-flow exception of the engine is not an error and lives
in `corral.engine`.
"""

from __future__ import annotations

from typing import Any, ClassVar


class CorralError(Exception):
    """The root of every error Corral raises on purpose."""

    code: ClassVar[str] = "corral_error"

    def __init__(self, message: str, **ids: Any) -> None:
        super().__init__(message)
        self.message = message
        self.ids: dict[str, Any] = ids
        for key, value in ids.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep the ids when an error crosses a process or a pickle boundary.
        return (_rebuild, (type(self), self.message, self.ids))

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "type": type(self).__name__, "message": self.message, **self.ids}


def _rebuild(cls: type[CorralError], message: str, ids: dict[str, Any]) -> CorralError:
    error = cls.__new__(cls)
    CorralError.__init__(error, message, **ids)
    return error


# -- usage errors ------------------------------------------------------------------------------


class UsageError(CorralError):
    """The caller asked for something that cannot be done as asked."""

    code = "usage_error"


class UnknownWorkflow(UsageError):
    code = "unknown_workflow"


class InvalidInput(UsageError):
    code = "invalid_input"


class RunNotFound(UsageError):
    code = "run_not_found"


class RunAlreadyFinished(UsageError):
    code = "run_finished"


class RunNotReconcilable(UsageError):
    """Only a run in needs_reconciliation, with its at-most-once step in flight, is reconciled."""

    code = "not_reconcilable"


class NotSerializable(UsageError):
    code = "not_serializable"


class StoreError(UsageError):
    """The database cannot be used: a bad URL, not a Corral database, a newer schema."""

    code = "store_error"


class SchemaVersionMismatch(StoreError):
    """The database's schema is at another version than this Corral's (ids: current, latest)."""

    code = "schema_mismatch"

    @property
    def database_is_older(self) -> bool:
        return bool(self.ids["current"] < self.ids["latest"])


class StoreUnavailable(StoreError):
    """The database is there but cannot be reached now (locked, down); trying again may work."""

    code = "store_unavailable"


class UnknownModel(UsageError):
    """A model string whose provider prefix Corral does not know."""

    code = "unknown_model"


class ModelNotConfigured(UsageError):
    """A model needs a setting (usually an API key) that is not set; `setting` names it."""

    code = "model_not_configured"


class ModelRequestsForbidden(UsageError):
    """A model request would leave the machine while network model requests are switched off."""

    code = "model_requests_forbidden"


class UnknownTool(UsageError):
    """A model called a tool the agent does not have."""

    code = "unknown_tool"


class ToolArgumentsInvalid(UsageError):
    """A tool call's arguments were not JSON, or failed the tool's schema."""

    code = "tool_arguments_invalid"


class AgentDefinitionError(UsageError):
    """An agent or pattern was defined in a way that cannot run (names clash, no stages…)."""

    code = "agent_definition"


class NamespaceViolation(UsageError):
    """A writer tried to write outside its own namespace (or a namespace that does not exist)."""

    code = "namespace_violation"


class NotAuthorized(UsageError):
    """A principal tried something its roles (or approver groups) do not allow."""

    code = "not_authorized"


class PolicyError(UsageError):
    """A policy document (or a policy test file) is malformed: names the source, line, reason.

    Importable from `corral.governance.policies`, where it belongs; it is defined here because
    compiling a condition is the lowest place that raises it.
    """

    code = "policy_invalid"


class ConditionError(UsageError):
    """A condition failed to evaluate or did not yield a bool; policy evaluation denies the call.

    Ids: `expression`, `where` (which rule), `reason`.
    """

    code = "condition_error"


class PolicyNotFound(UsageError):
    """No policy of that name (or no such version of it) in the tenant; the message lists what
    exists. Ids: `tenant`, `policy`, `version`."""

    code = "policy_not_found"


class ApprovalNotFound(UsageError):
    """No approval request with this id (in this store)."""

    code = "approval_not_found"


class AlreadyDecided(UsageError):
    """The request was decided before (by a human or its deadline); says by whom and when."""

    code = "already_decided"


class AuditChainBroken(UsageError):
    """The audit chain failed verification, so it was not signed (ids: tenant, seq)."""

    code = "audit_chain_broken"


class AuditLogEmpty(UsageError):
    """A tenant's audit log has no entries, so there is nothing to checkpoint (ids: tenant)."""

    code = "audit_log_empty"


class AuditKeyInvalid(UsageError):
    """A key file is missing, unreadable, not PEM, or not an Ed25519 key (ids: path)."""

    code = "audit_key_invalid"


class RedactionSettingInvalid(UsageError):
    """`CORRAL_REDACT` (or `kinds=`) names a kind Corral cannot redact (ids: value)."""

    code = "redaction_setting_invalid"


# -- run failures ------------------------------------------------------------------------------


class RunFailure(CorralError):
    """Something a run did failed."""

    code = "run_failure"


class RunFailed(RunFailure):
    """The run ended without succeeding: failed, cancelled, or stopped for reconciliation."""

    code = "run_failed"


class NonDeterminismError(RunFailure):
    """The workflow's code asked for a different step than the journal recorded at this position."""

    code = "non_determinism"


class StepFailed(RunFailure):
    """A step raised. The same error is raised again when the run replays past the step."""

    code = "step_failed"


class ChildRunFailed(RunFailure):
    code = "child_failed"


class SignalTimeout(RunFailure):
    code = "signal_timeout"


class NeedsReconciliation(RunFailure):
    """An at-most-once step was in flight at a crash; a human must say whether it happened."""

    code = "needs_reconciliation"


class LeaseLost(RunFailure):
    """This worker no longer holds the run: its write was fenced off by a newer lease epoch."""

    code = "lease_lost"


class ModelCallFailed(RunFailure):
    """A model call failed: the provider answered with an error, or not in a usable shape."""

    code = "model_call_failed"


class ToolFailed(RunFailure):
    """A tool raised. The tool loop reports it to the model; it fails a run only when raised."""

    code = "tool_failed"


class TurnLimitExceeded(RunFailure):
    """An agent's loop made `max_turns` model calls without reaching a final answer."""

    code = "turn_limit"


class RepeatedToolCall(RunFailure):
    """An agent made the same tool call (same arguments) more often than it may: a runaway."""

    code = "repeated_tool_call"


class OutputInvalid(RunFailure):
    """An agent's output failed its schema or a success check after every allowed retry."""

    code = "output_invalid"


class DepthLimitExceeded(RunFailure):
    """Delegation nested deeper than the configured limit (supervisors of supervisors…)."""

    code = "depth_limit"


class NoRoute(RunFailure):
    """No rule matched, there is no classifier, and there is no default route."""

    code = "no_route"


class PolicyDenied(RunFailure):
    """A tool call was refused: a policy denied it, or the agent lacks a scope it needs. The
    tool loop reports it to the model (with the reason); the call did not start."""

    code = "policy_denied"


class ApprovalRejected(RunFailure):
    """A call that needed approval was rejected (by a human or at its deadline)."""

    code = "approval_rejected"


class BudgetExceeded(RunFailure):
    """A call would exceed a budget whose policy is to stop the run (ids: budget, scope,
    metric, limit, used)."""

    code = "budget_exceeded"


class Paused(RunFailure):
    """A tool call did not start: its agent or tenant is paused (a kill switch)."""

    code = "paused"


# -- signals a step may raise ------------------------------------------------------------------


class StepTimeout(RunFailure):
    """A tool call, a model call or a whole step ran past its timeout and was abandoned."""

    code = "step_timeout"


class RunDeadlineExceeded(RunFailure):
    """The run's deadline (its workflow's or agent's `timeout`) passed before it finished."""

    code = "deadline_exceeded"


class CircuitOpen(RunFailure):
    """A dependency's circuit breaker is open: calls fail fast until it has recovered."""

    code = "circuit_open"


class StepLimitExceeded(RunFailure):
    """An agent's loop took `max_steps` steps (model and tool calls) without an answer."""

    code = "step_limit"


class RunCancelled(RunFailure):
    """The run was cancelled; raised inside a run that has compensations to make first."""

    code = "cancelled"


class RunSignal(CorralError):
    """Raised by a step to steer its run rather than to fail it."""

    code = "run_signal"


class ToolRetry(RunSignal):
    """Raised by a tool to send its message back to the model as the call's result.

    For a problem the model can fix ("no order 123; order ids look like A-1234"), rather than a
    failure of the tool.
    """

    code = "tool_retry"


class RetryStep(RunSignal):
    """Raised by a tool or step body for a passing failure (a 503, a lock held elsewhere): the
    step is tried again under its retry policy, after `retry_after` seconds if given."""

    code = "retry_step"


class ApprovalRequired(RunSignal):
    """A call needs a human's approval before it may start: the run requests one and waits."""

    code = "approval_required"


__all__ = [
    "AgentDefinitionError",
    "AlreadyDecided",
    "ApprovalNotFound",
    "ApprovalRejected",
    "ApprovalRequired",
    "AuditChainBroken",
    "AuditKeyInvalid",
    "AuditLogEmpty",
    "BudgetExceeded",
    "ChildRunFailed",
    "CircuitOpen",
    "ConditionError",
    "CorralError",
    "DepthLimitExceeded",
    "InvalidInput",
    "LeaseLost",
    "ModelCallFailed",
    "ModelNotConfigured",
    "ModelRequestsForbidden",
    "NamespaceViolation",
    "NeedsReconciliation",
    "NoRoute",
    "NonDeterminismError",
    "NotAuthorized",
    "NotSerializable",
    "OutputInvalid",
    "Paused",
    "PolicyDenied",
    "PolicyError",
    "PolicyNotFound",
    "RedactionSettingInvalid",
    "RepeatedToolCall",
    "RetryStep",
    "RunAlreadyFinished",
    "RunCancelled",
    "RunDeadlineExceeded",
    "RunFailed",
    "RunFailure",
    "RunNotFound",
    "RunNotReconcilable",
    "RunSignal",
    "SchemaVersionMismatch",
    "SignalTimeout",
    "StepFailed",
    "StepLimitExceeded",
    "StepTimeout",
    "StoreError",
    "StoreUnavailable",
    "ToolArgumentsInvalid",
    "ToolFailed",
    "ToolRetry",
    "TurnLimitExceeded",
    "UnknownModel",
    "UnknownTool",
    "UnknownWorkflow",
    "UsageError",
]
