"""The pipeline: stages in a fixed order, each stage's output validated as the next one's input.

```python
pipeline = Pipeline("articles", [
    researcher,                                   # an agent: its output is its final answer
    Stage("outline", outliner, input_type=Notes), # the researcher's answer must be Notes
    Stage("publish", publish),                    # async def publish(ctx, draft) -> Article
])
article = await pipeline.run(ctx, "durable execution")
```

Every stage runs inline, in this run: an agent stage's model and tool steps are in this run's
journal, one stage after the other. Between two stages, the output of the first is validated
against the declared input type of the second (`Stage(input_type=...)`, or an agent's own
`input_type` attribute when it has one), with pydantic: a dict becomes the model it must be, JSON
text is parsed, and a mismatch stops the pipeline with `OutputInvalid` naming the pipeline, both
stages and the violation, journaled as the failed step `pipeline.failed:<name>`. A stage with no
declared input type takes what it is given (an agent gets text, or JSON of a value).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from corral.agents.agent import Agent
from corral.agents.patterns.targets import fail, workflows_of
from corral.engine import RunContext, Workflow
from corral.errors import AgentDefinitionError, OutputInvalid

StageFunction = Callable[[RunContext, Any], Awaitable[Any]]
"""An `async def stage(ctx, value) -> value`: it may take steps, start child runs, run agents."""


class Stage:
    """One stage of a pipeline.

    Args:
        name: Unique in the pipeline; named in errors.
        run: An agent (run inline on the value), or `async def fn(ctx, value) -> value`.
        input_type: What the previous stage's output must validate as (any type pydantic
            validates: a model, `int`, `list[str]`, …); None accepts anything.
    """

    def __init__(
        self, name: str, run: Agent[Any] | StageFunction, *, input_type: Any = None
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise AgentDefinitionError(
                f"stage name {name!r} must be 1-64 letters, digits, '_', '.' or '-'", stage=name
            )
        if not isinstance(run, Agent) and not _is_async_callable(run):
            raise AgentDefinitionError(
                f"stage {name!r}: run must be an Agent or an `async def fn(ctx, value)`, not "
                f"{type(run).__name__}",
                stage=name,
            )
        self.name = name
        self.run = run
        self.input_type = input_type
        self._adapter: TypeAdapter[Any] | None = (
            TypeAdapter(input_type) if input_type is not None else None
        )

    def __repr__(self) -> str:
        return f"<Stage {self.name}>"

    @classmethod
    def of(cls, item: Agent[Any] | Stage) -> Stage:
        """A stage as given, or an agent as a stage named after it (with its `input_type`)."""
        if isinstance(item, Stage):
            return item
        if isinstance(item, Agent):
            return cls(item.name, item, input_type=getattr(item, "input_type", None))
        raise AgentDefinitionError(
            f"a pipeline stage must be an Agent or a Stage, not {type(item).__name__}"
        )

    @property
    def output_type(self) -> Any:
        """What the stage produces, when declared (an agent's `output_type`); None otherwise."""
        if isinstance(self.run, Agent):
            return self.run.output_type if self.run.output_type is not None else str
        return None

    def accept(self, value: Any) -> tuple[Any, str | None]:
        """(the value as this stage's input, None), or (None, what is wrong with it)."""
        if self._adapter is None:
            return value, None
        if isinstance(value, BaseModel):
            value = value.model_dump(mode="json")  # another model with the same fields is fine
        try:
            return self._adapter.validate_python(value), None
        except ValidationError as exc:
            error = exc
        if isinstance(value, str):
            try:
                return self._adapter.validate_json(_unfenced(value)), None
            except ValidationError as exc:
                if value.lstrip()[:1] in ("{", "[", '"'):
                    error = exc  # it was meant as JSON: its problems are the useful ones
        return None, _problems(error)

    async def __call__(self, ctx: RunContext, value: Any) -> Any:
        if isinstance(self.run, Agent):
            return (await self.run.run(ctx, value)).output
        return await self.run(ctx, value)


class Pipeline:
    """Stages run one after another in one run, each output validated as the next input.

    Args:
        name: Names the failure step (`pipeline.failed:<name>`) and the workflow
            (`pipeline:<name>`).
        stages: Agents and `Stage`s, in order; names unique.
        version: The version of the pipeline's workflow.
    """

    def __init__(
        self, name: str, stages: Sequence[Agent[Any] | Stage], *, version: str = "1"
    ) -> None:
        if not stages:
            raise AgentDefinitionError(f"pipeline {name!r} has no stages", pipeline=name)
        self.name = name
        self.stages = [Stage.of(item) for item in stages]
        seen: set[str] = set()
        for stage in self.stages:
            if stage.name in seen:
                raise AgentDefinitionError(
                    f"pipeline {name!r} has two stages named {stage.name!r}",
                    pipeline=name,
                    stage=stage.name,
                )
            seen.add(stage.name)
        self.version = version
        self._workflow: Workflow[Any, Any] | None = None

    def __repr__(self) -> str:
        return f"<Pipeline {self.name}: {' → '.join(s.name for s in self.stages)}>"

    async def run(self, ctx: RunContext, input: Any) -> Any:
        """Run every stage in order on `input`; return the last stage's output.

        Raises:
            OutputInvalid: A stage's output (or the pipeline's input) does not validate as the
                next stage's input type; journaled as `pipeline.failed:<name>`.
        """
        value = input
        previous = "(the pipeline's input)"
        for stage in self.stages:
            accepted, problem = stage.accept(value)
            if problem is not None:
                await fail(
                    ctx,
                    OutputInvalid(
                        f"pipeline {self.name!r}: the output of {previous} is not a valid input "
                        f"of stage {stage.name!r} ({_type_name(stage.input_type)}): {problem}",
                        pipeline=self.name,
                        stage=previous,
                        next_stage=stage.name,
                        schema=_type_name(stage.input_type),
                        violation=problem,
                        run_id=ctx.run_id,
                    ),
                    name=f"pipeline.failed:{self.name}",
                )
            value = await stage(ctx, accepted)
            previous = f"stage {stage.name!r}"
        return value

    # -- as a workflow -------------------------------------------------------------------------

    @property
    def workflow(self) -> Workflow[Any, Any]:
        """The workflow `pipeline:<name>`: the first stage's input type in, the last's output
        type out (any JSON where they are not declared)."""
        if self._workflow is None:
            pipeline = self

            async def run_pipeline(ctx: RunContext, value: Any) -> Any:
                return await pipeline.run(ctx, value)

            self._workflow = Workflow(
                fn=run_pipeline,
                name=f"pipeline:{self.name}",
                version=self.version,
                input_type=self.stages[0].input_type,
                output_type=self.stages[-1].output_type,
            )
        return self._workflow

    def __corral_workflow__(self) -> Workflow[Any, Any]:
        return self.workflow

    def __corral_workflows__(self) -> Iterable[Workflow[Any, Any]]:
        # Agent stages run inline; the agents they may delegate or hand off to are child runs
        # (their workflows are registered too; an agent's own is harmless among them).
        agents = [stage.run for stage in self.stages if isinstance(stage.run, Agent)]
        return [self.workflow, *workflows_of(agents)]


def _is_async_callable(fn: Any) -> bool:
    """An `async def` function, a partial of one, or an object with an `async def __call__`."""
    # The class's __call__ (own or inherited), looked up statically: a plain function's
    # __call__ is a method-wrapper, never a coroutine function.
    call = next((vars(k)["__call__"] for k in type(fn).__mro__ if "__call__" in vars(k)), None)
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call)


def _unfenced(text: str) -> str:
    """Agents often wrap JSON in a ```json fence; the value is the JSON inside."""
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text


def _problems(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in problem['loc']) or '(the whole value)'}: {problem['msg']}"
        for problem in error.errors()[:5]
    )


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", repr(type_))
