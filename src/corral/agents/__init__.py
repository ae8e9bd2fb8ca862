"""Agents: the tool loop, handoffs, delegation, the orchestration patterns, contracts.

See docs/agents.md.
"""

from corral.agents.agent import Agent, AgentResult, AgentTask
from corral.agents.contracts import Check, OutputContract
from corral.agents.escalation import Escalation
from corral.agents.events import AgentEvent, EventHub, agent_events
from corral.agents.patterns import (
    ChatResult,
    GroupChat,
    Merge,
    Namespace,
    Namespaces,
    NamespaceViolation,
    NoRoute,
    Pipeline,
    Routed,
    Router,
    Rule,
    Selector,
    Stage,
    TaskFailed,
    fan_out,
)

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentResult",
    "AgentTask",
    "ChatResult",
    "Check",
    "Escalation",
    "EventHub",
    "GroupChat",
    "Merge",
    "Namespace",
    "NamespaceViolation",
    "Namespaces",
    "NoRoute",
    "OutputContract",
    "Pipeline",
    "Routed",
    "Router",
    "Rule",
    "Selector",
    "Stage",
    "TaskFailed",
    "agent_events",
    "fan_out",
]
