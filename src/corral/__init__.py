"""Corral: a control plane for fleets of LLM agents. Durable, governed, observable.

The public surface is this namespace (pinned by `tests/test_public_api.py`).
"""

from corral.engine import (
    ChildHandle,
    Corral,
    RunContext,
    RunHandle,
    StepInfo,
    Worker,
    Workflow,
    current_step,
    step,
    workflow,
)
from corral.errors import (
    ChildRunFailed,
    CorralError,
    InvalidInput,
    LeaseLost,
    NeedsReconciliation,
    NonDeterminismError,
    NotSerializable,
    RunAlreadyFinished,
    RunFailed,
    RunFailure,
    RunNotFound,
    RunNotReconcilable,
    SignalTimeout,
    StepFailed,
    StoreError,
    StoreUnavailable,
    UnknownWorkflow,
    UsageError,
)

__version__ = "0.1.0"

__all__ = [
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
]
