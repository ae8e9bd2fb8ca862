"""Typed functions as tools: the schema from the signature and docstring, validation, calling."""

from __future__ import annotations

import threading
from typing import Any, Literal

import pytest

from corral.errors import AgentDefinitionError, ToolArgumentsInvalid
from corral.tools import Tool, ToolContext, ToolDefinition, parse_arguments, tool

CONTEXT = ToolContext(run_id="run-1", step_seq=4, idempotency_key="run-1:4", tool_name="refund")


@tool(risk="high", scopes=["payments:refund"], at_most_once=True)
async def refund(
    order_id: str, amount_cents: int, ctx: ToolContext, reason: str = "customer request"
) -> dict[str, Any]:
    """Refund part or all of an order.

    Goes through the payment provider.

    Args:
        order_id: The order to refund, e.g. A-1001.
        amount_cents: How much to refund,
            in cents.
        reason (str): Why, for the ledger.

    Returns:
        The refund.
    """
    return {"order_id": order_id, "amount_cents": amount_cents, "key": ctx.idempotency_key}


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    definition = refund.definition
    assert isinstance(definition, ToolDefinition)
    assert definition.name == "refund"
    assert definition.description == "Refund part or all of an order."
    assert (definition.risk, definition.scopes, definition.at_most_once) == (
        "high",
        ("payments:refund",),
        True,
    )
    schema = definition.parameters
    assert "title" not in schema
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["properties"]) == {"order_id", "amount_cents", "reason"}  # no ctx
    assert sorted(schema["required"]) == ["amount_cents", "order_id"]
    properties = schema["properties"]
    assert properties["order_id"]["type"] == "string"
    assert properties["order_id"]["description"] == "The order to refund, e.g. A-1001."
    assert properties["amount_cents"]["type"] == "integer"
    assert properties["amount_cents"]["description"] == "How much to refund, in cents."
    assert properties["reason"]["default"] == "customer request"
    assert properties["reason"]["description"] == "Why, for the ledger."
    assert refund.context_parameter == "ctx"


def test_name_and_description_can_be_given() -> None:
    def lookup(kind: Literal["order", "customer"]) -> str:
        """Not this."""
        return kind

    made = Tool.from_function(lookup, name="find-thing", description="Find a thing.")
    assert made.name == "find-thing"
    assert made.definition.description == "Find a thing."
    assert made.definition.parameters["properties"]["kind"]["enum"] == ["order", "customer"]
    assert made.definition.risk == "low"


def test_a_function_without_a_docstring_has_an_empty_description() -> None:
    @tool
    def ping() -> str:
        return "pong"

    assert ping.definition.description == ""
    assert ping.definition.parameters["properties"] == {}


@pytest.mark.parametrize("name", ["has space", "dot.ted", "x" * 65, "ünïcode"])
def test_an_invalid_tool_name_is_an_agent_definition_error(name: str) -> None:
    def fn() -> None:
        return None

    with pytest.raises(AgentDefinitionError, match="must be 1-64 letters"):
        Tool.from_function(fn, name=name)


def test_var_args_cannot_be_described() -> None:
    def fn(*items: int) -> None:
        return None

    with pytest.raises(AgentDefinitionError, match=r"\*args and \*\*kwargs"):
        Tool.from_function(fn)


def test_validation_accepts_json_and_mappings_and_fills_defaults() -> None:
    expected = {"order_id": "A-1", "amount_cents": 250, "reason": "customer request"}
    assert refund.validate('{"order_id": "A-1", "amount_cents": 250}') == expected
    assert refund.validate({"order_id": "A-1", "amount_cents": 250}) == expected


def test_bad_json_is_invalid_arguments() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="not valid JSON") as caught:
        refund.validate('{"order_id": ')
    assert caught.value.ids == {"tool": "refund"}


def test_json_that_is_not_an_object_is_invalid_arguments() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="must be a JSON object, not list"):
        refund.validate("[1, 2]")


def test_empty_arguments_are_an_empty_object() -> None:
    assert parse_arguments("t", "") == {}


def test_a_schema_failure_names_each_problem() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="failed its schema") as caught:
        refund.validate({"order_id": "A-1", "amount_cents": "lots"})
    assert "amount_cents" in caught.value.message


def test_a_missing_argument_is_invalid() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="order_id: Field required"):
        refund.validate({"amount_cents": 1})


def test_extra_fields_are_refused() -> None:
    with pytest.raises(ToolArgumentsInvalid, match="surprise: Extra inputs are not permitted"):
        refund.validate({"order_id": "A-1", "amount_cents": 1, "surprise": True})


async def test_an_async_tool_gets_its_context() -> None:
    arguments = refund.validate({"order_id": "A-1", "amount_cents": 5})
    assert await refund.call(arguments, CONTEXT) == {
        "order_id": "A-1",
        "amount_cents": 5,
        "key": "run-1:4",
    }


async def test_a_sync_tool_runs_in_a_thread() -> None:
    calling_thread = threading.get_ident()

    @tool
    def where(label: str, context: ToolContext) -> tuple[str, bool, str]:
        """Which thread runs this."""
        return label, threading.get_ident() != calling_thread, context.run_id

    assert where.context_parameter == "context"
    assert "context" not in where.definition.parameters["properties"]
    assert await where.call(where.validate({"label": "x"}), CONTEXT) == ("x", True, "run-1")


async def test_a_sync_function_returning_an_awaitable_is_awaited() -> None:
    async def later(value: int) -> int:
        return value * 2

    def deferred(value: int) -> Any:
        return later(value)

    made = Tool.from_function(deferred)
    assert await made.call({"value": 21}, CONTEXT) == 42
