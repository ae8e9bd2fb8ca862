"""The public namespace is a promise: changing it must be a decision, made here."""

import corral
import corral.engine
import corral.store
import corral.testing

EXPECTED = {
    "Agent",
    "AgentDefinitionError",
    "AgentResult",
    "DepthLimitExceeded",
    "ModelCallFailed",
    "ModelNotConfigured",
    "ModelRequestsForbidden",
    "OutputInvalid",
    "ToolArgumentsInvalid",
    "ToolContext",
    "ToolFailed",
    "ToolRetry",
    "TurnLimitExceeded",
    "UnknownModel",
    "UnknownTool",
    "tool",
    "ChildHandle",
    "ChildRunFailed",
    "Corral",
    "CorralError",
    "InvalidInput",
    "LeaseLost",
    "NeedsReconciliation",
    "NonDeterminismError",
    "NotSerializable",
    "RunAlreadyFinished",
    "RunContext",
    "RunFailed",
    "RunFailure",
    "RunHandle",
    "RunNotFound",
    "RunNotReconcilable",
    "SignalTimeout",
    "StepFailed",
    "StepInfo",
    "StoreError",
    "StoreUnavailable",
    "UnknownWorkflow",
    "UsageError",
    "Worker",
    "Workflow",
    "current_step",
    "step",
    "workflow",
}


def test_corral_all_is_pinned() -> None:
    assert set(corral.__all__) == EXPECTED


def test_every_name_in_all_exists() -> None:
    for module in (corral, corral.engine, corral.store, corral.testing):
        for name in module.__all__:
            assert hasattr(module, name), f"{module.__name__}.{name}"
