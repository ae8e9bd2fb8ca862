"""Contracts: an agent's output checked against its schema and its success checks.

A violation is not a crash: the tool loop sends it back to the model with the error, a bounded
number of times (`Agent(output_retries=…)`), and only then fails the run with `OutputInvalid`,
naming the agent, the schema and the violation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import TypeAdapter, ValidationError

Check = Callable[[Any], "bool | str | None"]
"""A success check on an agent's output: True/None passes; False or a message fails."""


@dataclass(frozen=True)
class Violation:
    """Why an output was refused: what it was checked against, and what was wrong."""

    against: str
    problem: str


class OutputContract:
    """The schema (a type pydantic can validate) and the checks an output must satisfy."""

    def __init__(self, output_type: Any = None, checks: Sequence[Check] = ()) -> None:
        self.output_type = output_type
        self.checks = tuple(checks)
        self._adapter: TypeAdapter[Any] | None = (
            TypeAdapter(output_type) if output_type not in (None, str) else None
        )

    @property
    def schema_name(self) -> str:
        if self.output_type in (None, str):
            return "text"
        return getattr(self.output_type, "__name__", repr(self.output_type))

    def json_schema(self) -> dict[str, Any] | None:
        """The JSON schema the model is asked to follow (None for free text)."""
        return self._adapter.json_schema() if self._adapter is not None else None

    def parse(self, text: str) -> tuple[Any, Violation | None]:
        """(the output, None) if `text` satisfies the contract; (None, why not) otherwise."""
        if self._adapter is None:
            value: Any = text
        else:
            try:
                value = self._adapter.validate_json(_strip_fences(text))
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in error['loc']) or '(output)'}: {error['msg']}"
                    for error in exc.errors()[:5]
                )
                return None, Violation(f"schema {self.schema_name}", problems)
        for check in self.checks:
            name = getattr(check, "__name__", repr(check))
            try:
                verdict = check(value)
            except Exception as exc:
                return None, Violation(f"check {name}", f"{type(exc).__name__}: {exc}")
            if verdict is False:
                return None, Violation(f"check {name}", "the check returned False")
            if isinstance(verdict, str):
                return None, Violation(f"check {name}", verdict)
        return value, None

    def feedback(self, violation: Violation) -> str:
        """What the model is told when its answer is refused."""
        text = f"Your answer did not satisfy {violation.against}: {violation.problem}."
        schema = self.json_schema()
        if schema is not None:
            text += " Reply with only a JSON value that matches this JSON schema: " + json.dumps(
                schema, separators=(",", ":")
            )
        else:
            text += " Reply again with a corrected answer."
        return text


def _strip_fences(text: str) -> str:
    """Models often wrap JSON in a ```json fence; the contract is about the JSON inside."""
    match = re.fullmatch(r"\s*```(?:json)?\s*(.*?)\s*```\s*", text, re.S)
    return match.group(1) if match else text
