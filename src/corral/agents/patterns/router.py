"""The router: decide where an event goes (rules, then a classifier agent, then a default), then
run the chosen target as a child run.

```python
router = Router(
    "support",
    routes={"refunds": refunds, "tech": tech_support, "other": front_desk},
    rules=[(lambda ticket: "refund" in ticket.lower(), "refunds")],
    classifier=Agent("classify", instructions="Which team handles this ticket?"),
    default="other",
)
routed = await router.run(ctx, "My screen is black")
routed.route, routed.output
```

The decision is tried in this order, and stops at the first that gives a route:

1. **Rules**: `(predicate, route)` pairs, tried in order on the event. Pure Python, no model
   call: cheap, deterministic, and easy to test. Predicates must be pure: a replay evaluates
   them again (and follows the journaled route).
2. **The classifier**: an agent whose answer must be `{"route": "<one of the routes>"}` (a
   `Literal` output contract; a bad answer is sent back and retried, up to its
   `output_retries`). Its model steps are in this run's journal.
3. **The default** route.

The decision is journaled as the step `route:<router name>` (its result is the route), so a
replay follows the same route. No route at all fails that step with `NoRoute`. The target then
runs as a child run (`child.start`, `child.result`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from pydantic import BaseModel

from corral.agents.agent import Agent
from corral.agents.loop import as_text
from corral.agents.patterns.targets import (
    check_target,
    child_input,
    choice_agent,
    choices_text,
    fail,
    reachable_workflows,
    workflows_of,
)
from corral.engine import RunContext, Runnable, Workflow
from corral.errors import AgentDefinitionError, NoRoute

Rule = tuple[Callable[[Any], bool], str]
"""A routing rule: a pure predicate on the event, and the route it selects."""


class Routed(BaseModel):
    """Where a router sent an event, and what the target answered."""

    route: str
    output: Any = None
    child_run_id: str | None = None
    decided_by: Literal["rule", "classifier", "default"] | None = None
    """What chose the route (recomputed on replay; the journaled route is what counts)."""


class Router:
    """Routes each event to one of its targets, and runs that target as a child run.

    Args:
        name: Names the decision step (`route:<name>`) and the router's workflow
            (`router:<name>`).
        routes: route name → the agent or runnable that handles it.
        rules: `(predicate, route)` pairs tried first, in order.
        classifier: An agent asked to choose a route when no rule matched. It answers
            `{"route": "<name>"}`; its instructions gain the list of routes (with each agent's
            description).
        default: The route when no rule matched and there is no classifier.
        version: The version of the router's workflow.
    """

    def __init__(
        self,
        name: str,
        *,
        routes: Mapping[str, Agent[Any] | Runnable],
        rules: Sequence[Rule] = (),
        classifier: Agent[Any] | None = None,
        default: str | None = None,
        version: str = "1",
    ) -> None:
        if not routes:
            raise AgentDefinitionError(f"router {name!r} has no routes", router=name)
        for route, target in routes.items():
            check_target(target, where=f"router {name!r} route {route!r}")
        known = ", ".join(routes)
        for position, rule in enumerate(rules):
            if not (isinstance(rule, tuple) and len(rule) == 2 and callable(rule[0])):
                raise AgentDefinitionError(
                    f"router {name!r}: rule {position} must be a (predicate, route) pair",
                    router=name,
                )
            if rule[1] not in routes:
                raise AgentDefinitionError(
                    f"router {name!r}: rule {position} names route {rule[1]!r}, which is not "
                    f"one of its routes ({known})",
                    router=name,
                    route=rule[1],
                )
        if default is not None and default not in routes:
            raise AgentDefinitionError(
                f"router {name!r}: default route {default!r} is not one of its routes ({known})",
                router=name,
                route=default,
            )
        self.name = name
        self.routes = dict(routes)
        self.rules = list(rules)
        self.classifier = classifier
        self.default = default
        self.version = version
        self._chooser = (
            choice_agent(
                classifier,
                field="route",
                names=list(self.routes),
                what="route",
                described=choices_text(self.routes),
            )
            if classifier is not None
            else None
        )
        self._workflow: Workflow[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<Router {self.name}: {', '.join(self.routes)}>"

    async def run(self, ctx: RunContext, event: Any) -> Routed:
        """Decide the route of `event` (journaled as `route:<name>`), run its target as a child
        run, and return the route with the target's output.

        Raises:
            NoRoute: Nothing chose a route (also journaled, as the failed decision step).
            OutputInvalid: The classifier never named a route within its retries.
            ChildRunFailed: The target's run failed.
        """
        decided_by: Literal["rule", "classifier", "default"] | None
        route, decided_by = self._by_rules(event)
        if route is None and self._chooser is not None:
            result = await self._chooser.run(ctx, event)
            route, decided_by = result.output.route, "classifier"
        if route is None and self.default is not None:
            route, decided_by = self.default, "default"
        if route is None:
            await fail(
                ctx,
                NoRoute(
                    f"router {self.name!r}: no rule matched the event and there is no "
                    f"classifier and no default route (routes: {', '.join(self.routes)}); "
                    f"event: {as_text(event)[:200]}",
                    router=self.name,
                    run_id=ctx.run_id,
                ),
                name=f"route:{self.name}",
            )
        route = await ctx.step(record_route, route, name=f"route:{self.name}")
        target = self.routes[route]
        handle = await ctx.start_child(target, child_input(target, event))
        output = await handle.result()
        return Routed(route=route, output=output, child_run_id=handle.run_id, decided_by=decided_by)

    def _by_rules(self, event: Any) -> tuple[str | None, Literal["rule"] | None]:
        for predicate, route in self.rules:
            if predicate(event):
                return route, "rule"
        return None, None

    # -- as a workflow -------------------------------------------------------------------------

    @property
    def workflow(self) -> Workflow[Any, Any]:
        """The workflow `router:<name>`: routes its input, returns the `Routed`."""
        if self._workflow is None:
            router = self

            async def route_event(ctx: RunContext, event: Any) -> Routed:
                return await router.run(ctx, event)

            self._workflow = Workflow(
                fn=route_event,
                name=f"router:{self.name}",
                version=self.version,
                input_type=None,
                output_type=Routed,
            )
        return self._workflow

    def __corral_workflow__(self) -> Workflow[Any, Any]:
        return self.workflow

    def __corral_workflows__(self) -> Iterable[Workflow[Any, Any]]:
        inline = reachable_workflows(self._chooser) if self._chooser is not None else []
        return [self.workflow, *workflows_of(self.routes.values()), *inline]


async def record_route(route: str) -> str:
    """The decision step's body: its journaled result is the route."""
    return route
