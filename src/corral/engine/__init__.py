"""The durable engine: workflows, run contexts, steps, journal replay, workers and leases.

The engine knows nothing of agents; agents are built on its public surface.
"""

from corral.engine.clock import Clock, SystemClock
from corral.engine.context import (
    ChildHandle,
    RunContext,
    StepInfo,
    commit_with_step,
    current_context,
    current_step,
)
from corral.engine.corral import Corral, RunHandle
from corral.engine.execution import Execution, execute_run
from corral.engine.retries import AttemptFailure, RetryDecision, RetryRule
from corral.engine.steps import step
from corral.engine.worker import Worker, WorkerStats
from corral.engine.workflows import (
    ProvidesWorkflows,
    Runnable,
    Workflow,
    WorkflowRegistry,
    workflow,
)

__all__ = [
    "AttemptFailure",
    "ChildHandle",
    "Clock",
    "Corral",
    "Execution",
    "ProvidesWorkflows",
    "RetryDecision",
    "RetryRule",
    "RunContext",
    "RunHandle",
    "Runnable",
    "StepInfo",
    "SystemClock",
    "Worker",
    "WorkerStats",
    "Workflow",
    "WorkflowRegistry",
    "commit_with_step",
    "current_context",
    "current_step",
    "execute_run",
    "step",
    "workflow",
]
