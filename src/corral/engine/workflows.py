"""Workflows: `async` functions with typed input and output, known by name and version."""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import (
    TYPE_CHECKING,
    Any,
    Generic,
    Protocol,
    TypeVar,
    Union,
    get_type_hints,
    overload,
    runtime_checkable,
)

from pydantic import TypeAdapter, ValidationError

from corral.engine import payloads
from corral.errors import InvalidInput, UnknownWorkflow, UsageError

if TYPE_CHECKING:
    from corral.engine.context import RunContext

I = TypeVar("I")
O = TypeVar("O")

WorkflowFunction = (
    Callable[["RunContext", I], Awaitable[O]] | Callable[["RunContext"], Awaitable[O]]
)


@dataclass(frozen=True, eq=False)
class Workflow(Generic[I, O]):
    """A workflow: its function, its name and version, and the types of its input and output."""

    fn: WorkflowFunction[I, O]
    name: str
    version: str = "1"
    input_type: Any = field(default=None)
    output_type: Any = field(default=None)
    takes_input: bool = True
    """False for `async def fn(ctx)`: the run's input is then always null."""
    timeout: float | None = None
    """Seconds from a run's creation to its deadline: past it, the run fails with
    `RunDeadlineExceeded` (after its compensations), whether it is working or waiting."""

    def deadline(self, created_at: float) -> float | None:
        return None if self.timeout is None else created_at + self.timeout

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    def encode_input(self, value: Any) -> str:
        """Validate an input against the input type and return it as JSON.

        `value` is a Python value (a model, a dict, a string…) or `bytes` holding JSON text (as
        the CLI and the API pass it).
        """
        where = f"input of workflow {self.name!r}"
        if payloads.is_untyped(self.input_type):
            if isinstance(value, bytes):
                try:
                    value = json.loads(value)
                except ValueError as exc:
                    raise InvalidInput(
                        f"{where} is not valid JSON: {exc}", workflow=self.name
                    ) from None
            return payloads.dump(value, None, where=where)
        adapter = payloads.adapter(self.input_type)
        try:
            typed = _validate(adapter, value)
        except ValidationError as exc:
            raise InvalidInput(
                f"{where} failed its schema ({_type_name(self.input_type)}): "
                f"{payloads.validation_message(exc)}",
                workflow=self.name,
            ) from None
        return payloads.dump(typed, self.input_type, where=where)

    def decode_input(self, text: str) -> I:
        result: I = payloads.load(text, self.input_type)
        return result

    async def call(self, ctx: RunContext, input_text: str) -> O:
        """Run the workflow's code on the run's stored input."""
        if self.takes_input:
            return await self.fn(ctx, self.decode_input(input_text))  # type: ignore[call-arg]
        return await self.fn(ctx)  # type: ignore[call-arg]

    def encode_output(self, value: O) -> str:
        return payloads.dump(value, self.output_type, where=f"workflow {self.name!r}")

    def decode_output(self, text: str | None) -> O:
        result: O = payloads.load(text, self.output_type)
        return result


def _validate(adapter: TypeAdapter[Any], value: Any) -> Any:
    """Bytes are JSON text; a str that is not itself a valid input is tried as JSON text."""
    if isinstance(value, bytes):
        return adapter.validate_json(value)
    try:
        return adapter.validate_python(value)
    except ValidationError:
        if isinstance(value, str) and value.lstrip()[:1] in ("{", "[", '"'):
            return adapter.validate_json(value)
        raise


def _type_name(type_: Any) -> str:
    return getattr(type_, "__name__", repr(type_))


def _workflow_from(
    fn: WorkflowFunction[I, O], name: str | None, version: str, timeout: float | None = None
) -> Workflow[I, O]:
    if not inspect.iscoroutinefunction(fn):
        raise UsageError(
            f"workflow {fn.__qualname__} must be an `async def` function taking (ctx, input)"
        )
    params = list(inspect.signature(fn).parameters.values())
    if not 1 <= len(params) <= 2:
        raise UsageError(
            f"workflow {fn.__qualname__} must take (ctx) or (ctx, input); it takes {len(params)}"
        )
    hints = get_type_hints(fn)
    input_type = hints.get(params[1].name) if len(params) == 2 else type(None)
    output_type = hints.get("return")
    return Workflow(
        fn=fn,
        name=name or fn.__name__,
        version=version,
        input_type=input_type,
        output_type=output_type,
        takes_input=len(params) == 2,
        timeout=_checked_timeout(timeout, fn.__qualname__),
    )


def _checked_timeout(timeout: float | None, where: str) -> float | None:
    if timeout is not None and not timeout > 0:
        raise UsageError(f"workflow {where}: timeout must be a positive number of seconds")
    return timeout


@overload
def workflow(fn: WorkflowFunction[I, O], /) -> Workflow[I, O]: ...
@overload
def workflow(
    *, name: str | None = None, version: str = "1", timeout: float | None = None
) -> Callable[[WorkflowFunction[I, O]], Workflow[I, O]]: ...
def workflow(
    fn: WorkflowFunction[I, O] | None = None,
    /,
    *,
    name: str | None = None,
    version: str = "1",
    timeout: float | None = None,
) -> Workflow[I, O] | Callable[[WorkflowFunction[I, O]], Workflow[I, O]]:
    """Make a workflow of an `async def fn(ctx, input) -> output`; register it with `Corral`.

    The input and output types come from the annotations (pydantic models, dataclasses, plain
    types); an unannotated input or output is any JSON value. `timeout` gives every run a
    deadline that many seconds after it was created.
    """
    if fn is not None:
        return _workflow_from(fn, name, version, timeout)

    def decorate(inner: WorkflowFunction[I, O]) -> Workflow[I, O]:
        return _workflow_from(inner, name, version, timeout)

    return decorate


@runtime_checkable
class ProvidesWorkflows(Protocol):
    """Something runnable that is not itself a workflow (an agent, a pipeline): it names the
    workflow that runs it, and every workflow it may start as a child run.

    The engine knows nothing of agents; this is the one hook through which they become runs.
    """

    def __corral_workflow__(self) -> Workflow[Any, Any]: ...

    def __corral_workflows__(self) -> Iterable[Workflow[Any, Any]]: ...


Runnable = Union["Workflow[Any, Any]", ProvidesWorkflows]


def as_workflow(target: Any) -> Workflow[Any, Any] | None:
    """The workflow of `target`: itself, what its `__corral_workflow__` gives, or None."""
    if isinstance(target, Workflow):
        return target
    if isinstance(target, ProvidesWorkflows):
        return target.__corral_workflow__()
    return None


class WorkflowRegistry:
    """The workflows one `Corral` instance knows, by name; `module:attr` names load on demand."""

    def __init__(self, workflows: Iterable[Workflow[Any, Any]] = ()) -> None:
        self._by_name: dict[str, Workflow[Any, Any]] = {}
        for wf in workflows:
            self.add(wf)

    def add(self, wf: Workflow[Any, Any]) -> None:
        known = self._by_name.get(wf.name)
        if known is not None and known is not wf and known.version == wf.version:
            raise UsageError(
                f"two different workflows are registered as {wf.name!r} version {wf.version}"
            )
        self._by_name[wf.name] = wf

    def names(self) -> list[str]:
        return sorted(self._by_name)

    def __iter__(self) -> Any:
        return iter(self._by_name.values())

    def add_all(self, target: Runnable) -> None:
        """Register a workflow, or everything an agent-like object may run (its children too)."""
        if isinstance(target, ProvidesWorkflows):
            for wf in target.__corral_workflows__():
                self.add(wf)
        elif isinstance(target, Workflow):
            self.add(target)
        else:
            raise UsageError(f"{target!r} is neither a workflow nor something that runs as one")

    def resolve(self, ref: str | Runnable) -> Workflow[Any, Any]:
        """A workflow by registered name or by `package.module:attribute`, or the workflow of
        an agent-like object (registered along with the workflows it may start)."""
        if isinstance(ref, ProvidesWorkflows):
            self.add_all(ref)
            return ref.__corral_workflow__()
        if isinstance(ref, Workflow):
            self.add(ref)
            return ref
        known = self._by_name.get(ref)
        if known is not None:
            return known
        if ":" in ref:
            target = _import_reference(ref)
            if isinstance(target, ProvidesWorkflows):
                self.add_all(target)  # the child runs it may start, by their own names
            wf = _workflow_of_reference(ref, target)
            self.add(wf)
            return wf
        hint = f"; registered: {', '.join(self.names())}" if self._by_name else ""
        raise UnknownWorkflow(
            f"unknown workflow {ref!r}: not registered and not a module:function reference{hint}",
            workflow=ref,
        )


def load_workflow_reference(ref: str) -> Workflow[Any, Any]:
    """Import `package.module:attribute` and make a workflow of it (named by the reference)."""
    return _workflow_of_reference(ref, _import_reference(ref))


def _import_reference(ref: str) -> Any:
    module_name, _, attr = ref.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownWorkflow(
            f"unknown workflow {ref!r}: cannot import module {module_name!r} ({exc})", workflow=ref
        ) from None
    target: Any = module
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise UnknownWorkflow(
                f"unknown workflow {ref!r}: module {module_name!r} has no {attr!r}", workflow=ref
            )
    return target


def _workflow_of_reference(ref: str, target: Any) -> Workflow[Any, Any]:
    found = as_workflow(target)
    if found is not None:
        # Runs started by reference keep the reference as their name: any worker can import it.
        return dataclasses.replace(found, name=ref)
    if callable(target):
        return _workflow_from(target, ref, "1")
    raise UnknownWorkflow(f"{ref!r} is a {type(target).__name__}, not a workflow", workflow=ref)
