"""Payloads: JSON in and out of steps, typed by annotations, canonical where hashed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from corral import NotSerializable, StepFailed
from corral.engine import payloads


class Item(BaseModel):
    sku: str
    qty: int


@dataclasses.dataclass
class Box:
    items: list[Item]
    sealed: bool = False


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (Item(sku="a", qty=1), Item),
        (Box(items=[Item(sku="b", qty=2)], sealed=True), Box),
        ((1, "x"), tuple[int, str]),
        ({"k": [1.5, None]}, dict[str, list[float | None]]),
        (dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.datetime),
        ("text", str),
        (None, None),
        ([1, "two", {"three": 3}], None),
    ],
)
def test_round_trip_keeps_the_type(value: Any, type_: Any) -> None:
    text = payloads.dump(value, type_, where="test")
    json.loads(text)  # it is JSON
    loaded = payloads.load(text, type_)
    assert loaded == value
    assert type(loaded) is type(value)


def test_untyped_values_are_plain_json() -> None:
    assert payloads.load(payloads.dump((1, 2), None, where="t"), None) == [1, 2]
    assert payloads.load(payloads.dump(Item(sku="a", qty=1), None, where="t"), None) == {
        "sku": "a",
        "qty": 1,
    }
    assert payloads.load(None, Item) is None


def test_not_serializable_names_where_and_the_type() -> None:
    class Handle:
        pass

    with pytest.raises(NotSerializable) as info:
        payloads.dump(Handle(), None, where="step 3 (open) of run r1")
    error = info.value
    assert error.code == "not_serializable"
    assert error.ids == {
        "where": "step 3 (open) of run r1",
        "value_type": "test_not_serializable_names_where_and_the_type.<locals>.Handle",
    }
    assert "step 3 (open) of run r1" in error.message
    assert "Handle" in error.message


def test_canonical_json_is_stable() -> None:
    a = {"b": 1, "a": [1, {"d": 2, "c": 3}], "é": "ü"}
    b = {"é": "ü", "a": [1, {"c": 3, "d": 2}], "b": 1}
    assert payloads.canonical(a) == payloads.canonical(b)
    assert payloads.canonical(a) == '{"a":[1,{"c":3,"d":2}],"b":1,"é":"ü"}'
    assert payloads.digest(a) == payloads.digest(b)
    assert payloads.digest(a) != payloads.digest({**a, "b": 2})
    assert len(payloads.digest(a)) == 64


def test_error_payload_of_a_corral_error_keeps_code_and_ids() -> None:
    error = StepFailed("step 1 failed", run_id="r1", seq=1)
    data = json.loads(payloads.dump_error(error))
    assert data["code"] == "step_failed"
    assert data["type"] == "StepFailed"
    assert (data["run_id"], data["seq"]) == ("r1", 1)
    assert data["module"] == "corral.errors"
    assert "StepFailed" in data["traceback"]


def test_error_payload_of_any_exception() -> None:
    try:
        raise ValueError("bad value")
    except ValueError as exc:
        data = json.loads(payloads.dump_error(exc))
    assert (data["code"], data["type"], data["message"]) == ("exception", "ValueError", "bad value")
    assert data["module"] == "builtins"
    assert "raise ValueError" in data["traceback"]


def test_validation_message_is_one_line_per_problem() -> None:
    with pytest.raises(ValidationError) as info:
        payloads.adapter(Box).validate_python(
            {"items": [{"sku": "a", "qty": "many"}], "sealed": "maybe"}
        )
    message = payloads.validation_message(info.value)
    assert "items.0.qty:" in message
    assert "sealed:" in message
    assert message.count(";") == 1
