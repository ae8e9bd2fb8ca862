"""Orchestration patterns on top of the agent runtime: supervisor-workers (`fan_out`), router,
pipeline, group chat, and namespaced shared state.

Hierarchies (supervisors of supervisors) and handoffs need no class of their own: they are
`Agent(delegates=..., max_depth=...)` and `Agent(handoffs=...)`. Each pattern object runs inside
a workflow (`await pattern.run(ctx, ...)`) and as a workflow of its own
(`corral.start(pattern, input)`). See docs/agents.md for what each costs and when to use it.
"""

from corral.agents.patterns.group_chat import ChatResult, GroupChat, Selector
from corral.agents.patterns.pipeline import Pipeline, Stage
from corral.agents.patterns.router import Routed, Router, Rule
from corral.agents.patterns.state import Merge, Namespace, Namespaces
from corral.agents.patterns.supervisor import TaskFailed, fan_out
from corral.errors import NamespaceViolation, NoRoute

__all__ = [
    "ChatResult",
    "GroupChat",
    "Merge",
    "Namespace",
    "NamespaceViolation",
    "Namespaces",
    "NoRoute",
    "Pipeline",
    "Routed",
    "Router",
    "Rule",
    "Selector",
    "Stage",
    "TaskFailed",
    "fan_out",
]
