"""The workflows and agents this server was given (`create_app(workflows=...)`, `CORRAL_APP`):
what `POST /runs` can start, at which version, and what each takes and returns.

An agent is listed as its own workflow, `agent:<name>` (as runs name it), with what it is made
of: its model, tools, and the agents it hands off or delegates to. The list is the server's, so
it is the same for every tenant.
"""

from __future__ import annotations

import inspect
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from pydantic import PydanticUserError

from corral.agents import Agent
from corral.agents.replay import agent_of
from corral.engine import Workflow, payloads
from corral.server.problems import not_found
from corral.server.routing import route
from corral.server.state import state_of
from corral.server.views import AgentOut, WorkflowDetailOut, WorkflowOut

router = APIRouter(tags=["workflows"])


def _registered(request: Request) -> dict[str, list[Workflow[Any, Any]]]:
    """The server's workflows by name, each name's versions in the order given (the last one
    given is the one runs start on, as in `WorkflowRegistry`)."""
    found: dict[str, list[Workflow[Any, Any]]] = {}
    for wf in state_of(request).workflows:
        versions = found.setdefault(wf.name, [])
        if wf not in versions:
            versions.append(wf)
    return dict(sorted(found.items()))


def _description(wf: Workflow[Any, Any], agent: Agent[Any] | None) -> str | None:
    if agent is not None:
        return agent.description or None
    doc = inspect.getdoc(wf.fn)
    return doc.split("\n\n")[0].replace("\n", " ") if doc else None


def _summary(versions: list[Workflow[Any, Any]]) -> WorkflowOut:
    current = versions[-1]
    agent = agent_of(current)
    return WorkflowOut(
        name=current.name,
        kind="agent" if agent is not None or current.name.startswith("agent:") else "workflow",
        version=current.version,
        versions=list(dict.fromkeys(wf.version for wf in versions)),
        description=_description(current, agent),
        timeout=current.timeout,
    )


def _schema(type_: Any) -> dict[str, Any] | None:
    """The JSON Schema of a payload type; None when untyped, or when pydantic has none for it."""
    if payloads.is_untyped(type_):
        return None
    try:
        return payloads.adapter(type_).json_schema()
    except PydanticUserError:  # a type pydantic validates but cannot describe
        return None


def _agent(agent: Agent[Any]) -> AgentOut:
    spec = agent.model_spec
    return AgentOut(
        name=agent.name,
        model=spec if isinstance(spec, str) else None if spec is None else spec.name,
        tools=agent.tool_names(),
        handoffs=[other.name for other in agent.handoffs],
        delegates=[other.name for other in agent.delegates],
        scopes=list(agent.scopes),
        max_turns=agent.max_turns,
    )


@route(
    router,
    "GET",
    "/workflows",
    "viewer",
    response_model=list[WorkflowOut],
    summary="Workflows and agents",
)
async def workflows(request: Request) -> list[WorkflowOut]:
    """The workflows and agents runs can be started of, by name."""
    return [_summary(versions) for versions in _registered(request).values()]


@route(
    router,
    "GET",
    "/workflows/{name}",
    "viewer",
    response_model=WorkflowDetailOut,
    summary="Get a workflow or agent",
)
async def get_workflow(
    name: Annotated[
        str, Path(min_length=1, max_length=200, description="`refund_flow`, `agent:refunds`.")
    ],
    request: Request,
) -> WorkflowDetailOut:
    """A workflow or agent (`agent:<name>`): its versions, the JSON Schemas of its input and
    output, and for an agent its model, tools and the agents it works with."""
    versions = _registered(request).get(name)
    if versions is None:
        raise not_found(f"workflow {name!r}")
    current = versions[-1]
    agent = agent_of(current)
    return WorkflowDetailOut(
        **_summary(versions).model_dump(),
        input_schema=_schema(current.input_type) if current.takes_input else None,
        output_schema=_schema(current.output_type),
        agent=None if agent is None else _agent(agent),
    )


__all__ = ["router"]
