"""Agents: the tool loop, handoffs, delegation, the orchestration patterns, contracts.

See docs/agents.md.
"""

from corral.agents.agent import Agent, AgentResult, AgentTask
from corral.agents.contracts import Check, OutputContract
from corral.agents.events import AgentEvent, EventHub, agent_events

__all__ = [
    "Agent",
    "AgentEvent",
    "AgentResult",
    "AgentTask",
    "Check",
    "EventHub",
    "OutputContract",
    "agent_events",
]
