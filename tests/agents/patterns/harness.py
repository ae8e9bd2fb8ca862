"""The agent tests' helpers, for the pattern tests next door (`from .harness import steps_of`)."""

from __future__ import annotations

# A parent-relative import, in this one place: it resolves both under pytest (which imports the
# tests as `agents.…`) and under mypy (which checks them as `tests.agents.…`).
from ..harness import run_error, steps_of  # noqa: TID252

__all__ = ["run_error", "steps_of"]
