"""Observability: views of the journal — traces, metrics, costs, search, diffs, replay,
comparisons, summaries and retention. Nothing here keeps a second log: every view is computed
from the runs and steps the engine journals (`journal_view`)."""

from corral.observe.journal_view import RunView, StepView, load_run_view, step_view

__all__ = ["RunView", "StepView", "load_run_view", "step_view"]
