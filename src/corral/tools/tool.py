"""Typed Python functions as tools: a JSON schema from the signature and the docstring.

```python
@tool(risk="high", scopes=["payments:refund"])
async def refund(order_id: str, amount_cents: int, ctx: ToolContext) -> dict[str, str]:
    \"\"\"Refund part or all of an order.

    Args:
        order_id: The order to refund, e.g. A-1001.
        amount_cents: How much to refund, in cents.
    \"\"\"
```

Arguments are validated (pydantic) before the function is called; a failure is a
`ToolArgumentsInvalid` whose message the tool loop sends back to the model. A parameter
annotated `ToolContext` receives the call's context and is not part of the schema.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, get_type_hints, overload

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from corral.engine.retries import RetryRule
from corral.errors import AgentDefinitionError, ToolArgumentsInvalid
from corral.models.messages import ToolSpec
from corral.tools.context import ToolContext

Risk = Literal["low", "medium", "high"]


class ToolDefinition(ToolSpec):
    """A tool as the model and governance see it: its spec, its risk and the scopes it needs."""

    risk: Risk = "low"
    scopes: tuple[str, ...] = ()
    at_most_once: bool = False
    """Never call twice: a crash while it was in flight stops the run for a person to settle."""
    timeout: float | None = None
    """Seconds one call may take before it is abandoned (`StepTimeout`); None: the agent's."""


class _Arguments(BaseModel):
    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True, eq=False)
class Tool:
    """A callable tool. Build one with `@tool` or `Tool.from_function`."""

    definition: ToolDefinition
    fn: Callable[..., Any]
    arguments_model: type[BaseModel]
    context_parameter: str | None = None
    _is_async: bool = field(default=False, repr=False)
    retry: RetryRule | None = None
    """How a failed call is retried (a `corral.reliability.RetryPolicy`); None: the agent's."""

    @property
    def name(self) -> str:
        return self.definition.name

    @classmethod
    def from_function(
        cls,
        fn: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
        risk: Risk = "low",
        scopes: Iterable[str] = (),
        at_most_once: bool = False,
        timeout: float | None = None,
        retry: RetryRule | None = None,
    ) -> Tool:
        tool_name = fn.__name__ if name is None else name
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", tool_name):
            raise AgentDefinitionError(
                f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-' (the limit "
                "model providers put on function names)",
                tool=tool_name,
            )
        summary, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
        hints = get_type_hints(fn)
        fields: dict[str, Any] = {}
        context_parameter = None
        for parameter in inspect.signature(fn).parameters.values():
            annotation = hints.get(parameter.name, Any)
            if annotation is ToolContext:
                context_parameter = parameter.name
                continue
            if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                raise AgentDefinitionError(
                    f"tool {tool_name!r}: *args and **kwargs cannot be described to a model",
                    tool=tool_name,
                )
            default = ... if parameter.default is parameter.empty else parameter.default
            fields[parameter.name] = (
                annotation,
                Field(default, description=arg_docs.get(parameter.name)),
            )
        model = create_model(f"{tool_name}_arguments", __base__=_Arguments, **fields)
        schema = model.model_json_schema()
        schema.pop("title", None)
        definition = ToolDefinition(
            name=tool_name,
            description=description if description is not None else summary,
            parameters=schema,
            risk=risk,
            scopes=tuple(scopes),
            at_most_once=at_most_once,
            timeout=timeout,
        )
        return cls(definition, fn, model, context_parameter, inspect.iscoroutinefunction(fn), retry)

    def validate(self, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
        """Parse and validate a call's arguments; `ToolArgumentsInvalid` says what is wrong."""
        parsed = parse_arguments(self.name, arguments)
        try:
            validated = self.arguments_model.model_validate(parsed)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in error['loc']) or '(arguments)'}: {error['msg']}"
                for error in exc.errors()
            )
            raise ToolArgumentsInvalid(
                f"arguments for tool {self.name!r} failed its schema: {problems}",
                tool=self.name,
            ) from None
        return {name: getattr(validated, name) for name in type(validated).model_fields}

    async def call(self, arguments: dict[str, Any], context: ToolContext) -> Any:
        """Call the function with validated arguments (a sync function runs in a thread)."""
        kwargs = dict(arguments)
        if self.context_parameter is not None:
            kwargs[self.context_parameter] = context
        if self._is_async:
            return await self.fn(**kwargs)
        result = await asyncio.to_thread(self.fn, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        return result


def parse_arguments(tool: str, arguments: str | Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments as a dict; `ToolArgumentsInvalid` if the model wrote no JSON object."""
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        parsed = json.loads(arguments or "{}")
    except ValueError as exc:
        raise ToolArgumentsInvalid(
            f"arguments for tool {tool!r} are not valid JSON ({exc}): {arguments[:200]!r}",
            tool=tool,
        ) from None
    if not isinstance(parsed, dict):
        raise ToolArgumentsInvalid(
            f"arguments for tool {tool!r} must be a JSON object, not {type(parsed).__name__}",
            tool=tool,
        )
    return parsed


@overload
def tool(fn: Callable[..., Awaitable[Any]] | Callable[..., Any], /) -> Tool: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "low",
    scopes: Iterable[str] = (),
    at_most_once: bool = False,
    timeout: float | None = None,
    retry: RetryRule | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...
def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    risk: Risk = "low",
    scopes: Iterable[str] = (),
    at_most_once: bool = False,
    timeout: float | None = None,
    retry: RetryRule | None = None,
) -> Any:
    """Make a function (sync or async) a tool.

    Args:
        name: The name the model sees; the function's name by default.
        description: What the model is told; the docstring's first paragraph by default.
        risk: `low`, `medium` or `high`; policies (governance) can decide on it.
        scopes: The permissions the tool needs, e.g. `["payments:refund"]`.
        at_most_once: Never call it twice; a crash mid-call stops the run for reconciliation.
            Such a tool is never retried automatically either.
        timeout: Seconds one call may take before it is abandoned (`StepTimeout`); None: the
            agent's `tool_timeout`.
        retry: How failed calls are retried (`corral.reliability.RetryPolicy`); None: the
            agent's `retry`.
    """

    def decorate(inner: Callable[..., Any]) -> Tool:
        return Tool.from_function(
            inner,
            name=name,
            description=description,
            risk=risk,
            scopes=scopes,
            at_most_once=at_most_once,
            timeout=timeout,
            retry=retry,
        )

    if fn is not None:
        return decorate(fn)
    return decorate


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(summary, {argument: description}) from a Google-style docstring."""
    paragraphs = doc.split("\n\n")
    summary = " ".join(paragraphs[0].split()) if paragraphs and paragraphs[0] else ""
    args: dict[str, str] = {}
    in_args = False
    current: str | None = None
    for line in doc.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if not stripped:
                current = None
                continue
            if re.fullmatch(r"[A-Z][A-Za-z ]*:", stripped):  # the next section
                break
            match = re.match(r"(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", stripped)
            if match and line.startswith((" ", "\t")) and _indent(line) <= _args_indent(doc):
                current = match.group(1)
                args[current] = match.group(2)
            elif current is not None:
                args[current] = f"{args[current]} {stripped}".strip()
    return summary, args


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _args_indent(doc: str) -> int:
    """The indentation of the first argument line under `Args:`."""
    lines = doc.splitlines()
    for index, line in enumerate(lines):
        if line.strip() in ("Args:", "Arguments:", "Parameters:"):
            for following in lines[index + 1 :]:
                if following.strip():
                    return _indent(following)
    return 0
