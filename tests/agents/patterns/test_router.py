"""The router: rules, then the classifier agent, then the default; the decision journaled, the
target run as a child run; unknown routes refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from corral import Corral, RunContext
from corral.agents import Agent, Routed, Router
from corral.errors import AgentDefinitionError
from corral.models import ModelRequest, ScriptedModel

from .harness import run_error, steps_of


def team(name: str) -> Agent[Any]:
    def rules(request: ModelRequest) -> str:
        return f"{name} handled: {request.messages[-1].content}"

    return Agent(name, description=f"the {name} team", model=ScriptedModel(rules=rules))


refunds, tech, other = team("refunds"), team("tech"), team("other")
ROUTES: dict[str, Agent[Any]] = {"refunds": refunds, "tech": tech, "other": other}
RULES = [(lambda ticket: "refund" in str(ticket).lower(), "refunds")]


async def route(corral: Corral, router: Router, event: Any) -> tuple[str, Routed]:
    handle = await corral.start(router, event)
    await corral.run_until_idle()
    return handle.run_id, await handle.wait_for_result()


async def test_a_rule_decides_without_a_model_call(corral: Corral) -> None:
    classifier = Agent("classify", model=ScriptedModel([]))  # would fail if it were asked
    router = Router("support", routes=ROUTES, rules=RULES, classifier=classifier)
    run_id, routed = await route(corral, router, "I want a refund for A-1")
    assert routed.route == "refunds"
    assert routed.decided_by == "rule"
    assert routed.output == "refunds handled: I want a refund for A-1"
    assert await steps_of(corral, run_id) == [
        ("route:support", "succeeded"),
        ("agent:refunds", "succeeded"),
        ("agent:refunds", "succeeded"),
    ]
    decision = (await corral.journal(run_id))[0]
    assert json.loads(decision.result or "") == "refunds"
    assert routed.child_run_id is not None
    child = await corral.get_run(routed.child_run_id)
    assert child.parent_run_id == run_id
    assert await steps_of(corral, child.run_id) == [("model:refunds", "succeeded")]


async def test_the_classifier_decides_when_no_rule_matches(corral: Corral) -> None:
    requests: list[ModelRequest] = []

    def classify(request: ModelRequest) -> str:
        requests.append(request)
        return '{"route": "tech"}'

    classifier = Agent("classify", instructions="Pick a team.", model=ScriptedModel(rules=classify))
    router = Router("support", routes=ROUTES, rules=RULES, classifier=classifier)
    run_id, routed = await route(corral, router, "My screen is black")
    assert (routed.route, routed.decided_by) == ("tech", "classifier")
    assert routed.output == "tech handled: My screen is black"
    assert await steps_of(corral, run_id) == [
        ("model:classify", "succeeded"),
        ("route:support", "succeeded"),
        ("agent:tech", "succeeded"),
        ("agent:tech", "succeeded"),
    ]
    # The classifier is told the routes, and its answer is held to a Literal of their names.
    assert requests[0].instructions.startswith("Pick a team.")
    assert "- tech: the tech team" in requests[0].instructions
    schema = requests[0].output_schema or {}
    assert schema["properties"]["route"]["enum"] == ["refunds", "tech", "other"]


async def test_a_classifier_answer_that_is_no_route_is_retried(corral: Corral) -> None:
    classifier = Agent(
        "classify", model=ScriptedModel(['{"route": "sales"}', "tech", '{"route": "other"}'])
    )
    router = Router("support", routes=ROUTES, classifier=classifier)
    run_id, routed = await route(corral, router, "Do you sell gift cards?")
    assert routed.route == "other"
    assert await steps_of(corral, run_id) == [
        ("model:classify", "succeeded"),  # "sales": not a route, sent back
        ("model:classify", "succeeded"),  # bare text: not the JSON asked for, sent back
        ("model:classify", "succeeded"),
        ("route:support", "succeeded"),
        ("agent:other", "succeeded"),
        ("agent:other", "succeeded"),
    ]


async def test_a_classifier_that_never_names_a_route_fails_the_run(corral: Corral) -> None:
    classifier = Agent(
        "classify", model=ScriptedModel(rules=lambda r: '{"route": "sales"}'), output_retries=1
    )
    router = Router("support", routes=ROUTES, classifier=classifier, default="other")
    handle = await corral.start(router, "gift cards?")
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [
        ("model:classify", "succeeded"),
        ("model:classify", "succeeded"),
        ("agent.failed:classify", "failed"),
    ]
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "output_invalid"
    assert "route" in error["violation"]


async def test_the_default_route_when_nothing_else_decides(corral: Corral) -> None:
    router = Router("support", routes=ROUTES, rules=RULES, default="other")
    run_id, routed = await route(corral, router, "Hello?")
    assert (routed.route, routed.decided_by) == ("other", "default")
    assert await steps_of(corral, run_id) == [
        ("route:support", "succeeded"),
        ("agent:other", "succeeded"),
        ("agent:other", "succeeded"),
    ]


async def test_no_route_fails_the_decision_step_clearly(corral: Corral) -> None:
    router = Router("support", routes=ROUTES, rules=RULES)
    handle = await corral.start(router, "Hello?")
    await corral.run_until_idle()
    assert await steps_of(corral, handle.run_id) == [("route:support", "failed")]
    error = await run_error(corral, handle.run_id)
    assert error["code"] == "no_route"
    assert error["router"] == "support"
    assert "no rule matched" in error["message"]
    assert "Hello?" in error["message"]


def test_routes_named_by_rules_and_default_must_exist() -> None:
    with pytest.raises(AgentDefinitionError, match="rule 0 names route 'sales'"):
        Router("r", routes=ROUTES, rules=[(lambda e: True, "sales")])
    with pytest.raises(AgentDefinitionError, match="default route 'nobody' is not one"):
        Router("r", routes=ROUTES, default="nobody")
    with pytest.raises(AgentDefinitionError, match="has no routes"):
        Router("r", routes={})
    with pytest.raises(AgentDefinitionError, match="route 'x' is a str"):
        Router("r", routes={"x": "not an agent"})  # type: ignore[dict-item]


async def test_a_router_inside_a_workflow_routes_to_any_runnable(corral: Corral) -> None:
    @corral.workflow
    async def shout(ctx: RunContext, text: str) -> str:
        return text.upper()

    router = Router("loud", routes={"shout": shout, "tech": tech}, rules=[(str.isupper, "shout")])

    @corral.workflow
    async def handle_all(ctx: RunContext, events: list[str]) -> list[str]:
        return [str((await router.run(ctx, event)).output) for event in events]

    handle = await corral.start(handle_all, ["HELP", "help"])
    await corral.run_until_idle()
    assert (await handle.get()).status == "failed"  # "help" matches no rule and has no default
    assert await steps_of(corral, handle.run_id) == [
        ("route:loud", "succeeded"),
        ("shout", "succeeded"),
        ("shout", "succeeded"),
        ("route:loud", "failed"),
    ]
