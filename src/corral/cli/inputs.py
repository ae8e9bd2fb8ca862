"""JSON given on the command line (`--input`, `--input-file`, `--data`), with clear errors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from corral import InvalidInput, UsageError, Workflow


def parse_json(text: str, *, source: str) -> Any:
    """`text` as a JSON value; InvalidInput saying where the JSON of `source` is malformed."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        excerpt = text[max(exc.pos - 20, 0) : exc.pos + 20].replace("\n", " ")
        raise InvalidInput(
            f"{source} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno} "
            f"(char {exc.pos}), near {excerpt!r}",
            source=source,
            line=exc.lineno,
            column=exc.colno,
        ) from None


def takes_text(workflow: Workflow[Any, Any]) -> bool:
    """Whether a workflow's declared input type accepts a plain string (agents do)."""
    if workflow.input_type in (None, Any):
        return False  # untyped input is JSON, so a typo in JSON is not silently a string
    try:
        TypeAdapter(workflow.input_type).validate_python("text")
    except ValidationError:
        return False
    return True


def read_input(input_json: str | None, input_file: Path | None) -> str | None:
    """The JSON text of `--input JSON` or `--input-file PATH` (`-` for stdin), checked to be
    JSON; None if neither was given."""
    if input_json is not None and input_file is not None:
        raise UsageError("give the input with --input or with --input-file, not both")
    if input_json is not None:
        parse_json(input_json, source="--input")
        return input_json
    if input_file is None:
        return None
    if str(input_file) == "-":
        text = sys.stdin.read()
        parse_json(text, source="--input-file - (stdin)")
        return text
    try:
        text = input_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(
            f"cannot read --input-file {str(input_file)!r}: {exc}", path=str(input_file)
        ) from None
    parse_json(text, source=f"--input-file {str(input_file)!r}")
    return text
