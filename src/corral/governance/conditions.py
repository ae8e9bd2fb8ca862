"""Policy conditions: CEL expressions over a tool call, compiled once and evaluated fail-closed.

A rule's `when` is a CEL expression (the language of Kubernetes admission policies), run by the
`common-expression-language` package (module `cel`). It sees these variables:

- `args`: the tool call's arguments (a map, as validated against the tool's schema);
- `agent`: `name` (null for a call made outside any agent), `scopes` (a list of strings);
- `tool`: `name`, `risk` (`low`, `medium`, `high`), `scopes`;
- `run`: `id`, `workflow`, `tenant`;
- `budget`: spent so far, 0 when unknown: `run_usd`, `run_tokens`, `run_tool_calls`,
  `agent_usd_today`, `agent_tokens_today`, `tenant_usd_today`, `tenant_tokens_today`;
- `now`: the time of the call, a UTC timestamp (`now.getHours()`,
  `now > timestamp('2026-01-01T00:00:00Z')`).

Examples: `args.amount_cents > 50000`, `tool.risk == 'high' && !('payments:admin' in
agent.scopes)`, `budget.run_usd > 1.5`, `now.getDayOfWeek() in [0, 6]` (Sunday, Saturday).

Evaluation is fail-closed: an expression that errors (a missing argument, a type mismatch, a
division by zero) or yields something other than a bool raises `ConditionError`, which policy
evaluation turns into a deny. A condition that should tolerate an absent argument says so with
`has(args.field) && …`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from corral.errors import ConditionError as ConditionError
from corral.errors import PolicyError as PolicyError
from corral.governance.decisions import CallContext

if TYPE_CHECKING:
    import cel


def _cel() -> Any:
    """The CEL library, imported on first use: its package also imports a REPL (prompt_toolkit),
    half a second that a `corral` command which evaluates no condition should not pay."""
    import cel

    return cel


VARIABLES = ("args", "agent", "tool", "run", "budget", "now")
"""The names a condition may use (besides names it binds itself in macros like `all(x, …)`)."""

BUDGET_KEYS = (
    "run_usd",
    "run_tokens",
    "run_tool_calls",
    "agent_usd_today",
    "agent_tokens_today",
    "tenant_usd_today",
    "tenant_tokens_today",
)
"""The budget figures a condition can read; each is 0 when the caller did not provide it."""

_COUNTS = ("_tokens", "_tool_calls", "_tokens_today")
"""Budget figures that count things: bound as CEL ints, so `budget.run_tool_calls + 1 > 10`
type-checks (CEL does not mix int and double in arithmetic)."""


class Bindings:
    """A call's variables, converted to CEL lazily: each the first time a condition needs it.

    Converting values to CEL costs microseconds per string and map, far more than evaluating a
    typical condition, so `PolicySet.decide` binds a call once and converts only the variables
    its conditions read (usually just `args`).
    """

    __slots__ = ("_bound", "_context", "_variables")

    def __init__(self, variables: Mapping[str, Any]) -> None:
        self._variables = variables
        self._context: cel.Context = _cel().Context()
        self._bound: set[str] = set()

    def context_for(self, names: frozenset[str]) -> cel.Context:
        """The CEL context with (at least) `names` bound."""
        for name in names - self._bound:
            # A name that is no variable (a macro's `x`, a typo) stays unbound: CEL binds the
            # former itself and fails on the latter, which denies.
            if name in self._variables:
                self._context.add_variable(name, self._variables[name])
            self._bound.add(name)
        return self._context


def bind(variables: Mapping[str, Any]) -> Bindings:
    """Prepare `variables` for evaluating several conditions about the same call."""
    return Bindings(variables)


@dataclass(frozen=True, eq=False)
class Condition:
    """A compiled CEL expression; `where` says which rule it belongs to, for messages."""

    expression: str
    where: str
    _program: cel.Program
    _names: frozenset[str]

    def evaluate(self, variables: Mapping[str, Any] | Bindings) -> bool:
        """True or False; `ConditionError` for anything else (the caller denies on it).

        Args:
            variables: the condition's variables (`variables_for(call)`), as a dict or as
                `bind(variables)` when several conditions are evaluated for the same call.
        """
        bindings = variables if isinstance(variables, Bindings) else Bindings(variables)
        try:
            result = self._program.execute(bindings.context_for(self._names))
        except (KeyboardInterrupt, SystemExit, GeneratorExit, asyncio.CancelledError):
            raise
        except BaseException as error:
            # The Rust extension may raise a panic (pyo3's PanicException is a BaseException):
            # any failure must deny, never allow.
            raise self._error(f"{type(error).__name__}: {_first_line(error)}") from error
        if not isinstance(result, bool):
            raise self._error(f"yields {type(result).__name__} {result!r}, not a bool")
        return result

    def _error(self, reason: str) -> ConditionError:
        return ConditionError(
            f"{self.where}: condition `{self.expression}` {reason}",
            expression=self.expression,
            where=self.where,
            reason=reason,
        )


def compile_condition(expression: str, *, where: str) -> Condition:
    """Compile a CEL expression; `PolicyError` (ids `source`=where, `line`=None, `reason`) when
    it is not valid CEL.

    Args:
        expression: the CEL text of a rule's `when`.
        where: where it comes from, for messages (`refunds.yaml, line 12: rules[0].when`).
    """
    try:
        program, names = _compiled(expression)
    except ValueError as error:
        reason = f"invalid CEL: {cel_error_detail(error)}"
        raise PolicyError(f"{where}: {reason}", source=where, line=None, reason=reason) from None
    return Condition(
        expression=expression,
        where=where,
        _program=program,
        _names=names,
    )


@lru_cache(maxsize=4096)
def _compiled(expression: str) -> tuple[cel.Program, frozenset[str]]:
    # Programs are immutable: the same `when` in many policies (and in every parse of a stored
    # document) is compiled once per process.
    if not expression.strip():
        raise ValueError("the expression is empty")
    program = _cel().compile(expression)
    return program, frozenset(program.variables())


def cel_error_detail(error: BaseException) -> str:
    """The useful part of the CEL library's message: `1:9: Syntax error: mismatched input …`
    (its first line, without the long list of tokens it expected)."""
    text = str(error)
    marker = "ERROR: <input>:"
    if marker in text:
        text = text.split(marker, 1)[1]
    first = next((line.strip() for line in text.splitlines() if line.strip()), text)
    return first.split(" expecting {", 1)[0]


def cel_error_line(error: BaseException) -> int | None:
    """The 1-based line within the expression that the CEL library blames, if it says."""
    text = str(error)
    marker = "ERROR: <input>:"
    if marker not in text:
        return None
    head = text.split(marker, 1)[1].split(":", 1)[0]
    return int(head) if head.isdigit() else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "(no message)"


def variables_for(call: CallContext) -> dict[str, Any]:
    """The variables a condition sees for `call` (see the module docstring)."""
    budget: dict[str, int | float] = dict.fromkeys(BUDGET_KEYS, 0.0)
    budget.update(call.budget)
    for key, value in budget.items():
        if key.endswith(_COUNTS) and float(value).is_integer():
            budget[key] = int(value)
    return {
        "args": dict(call.arguments),
        "agent": {"name": call.agent, "scopes": list(call.agent_scopes)},
        "tool": {"name": call.tool, "risk": call.tool_risk, "scopes": list(call.tool_scopes)},
        "run": {"id": call.run_id, "workflow": call.workflow, "tenant": call.tenant},
        "budget": budget,
        "now": dt.datetime.fromtimestamp(call.now, tz=dt.UTC),
    }
