"""Payloads are JSON: values in and out of steps, workflows and signals, typed by annotations.

A value with a type annotation goes through pydantic (so models come back as models on replay);
one without goes through `json`. Live execution and replay return the same decoded value, so code
never sees a tuple the first time and a list after a restart.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from functools import lru_cache
from typing import Any

from pydantic import TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError, to_jsonable_python

from corral.errors import CorralError, NotSerializable

_PLAIN = (str, int, float, bool, type(None))


@lru_cache(maxsize=1024)
def adapter(type_: Any) -> TypeAdapter[Any]:
    return TypeAdapter(type_)


def is_untyped(type_: Any) -> bool:
    return type_ is None or type_ is Any


def dump(value: Any, type_: Any, *, where: str) -> str:
    """Serialise `value`; raise NotSerializable naming `where` and the type if it cannot be."""
    try:
        if is_untyped(type_):
            if isinstance(value, _PLAIN):
                return json.dumps(value)
            return json.dumps(to_jsonable_python(value), separators=(",", ":"), ensure_ascii=False)
        return adapter(type_).dump_json(value).decode()
    except (TypeError, ValueError, PydanticSerializationError) as exc:
        raise NotSerializable(
            f"{where} produced a value of type {type(value).__qualname__} that cannot be stored "
            f"as JSON: {exc}",
            where=where,
            value_type=type(value).__qualname__,
        ) from exc


def load(text: str | None, type_: Any) -> Any:
    if text is None:
        return None
    if is_untyped(type_):
        return json.loads(text)
    return adapter(type_).validate_json(text)


def canonical(value: Any) -> str:
    """Canonical JSON (sorted keys, no spaces) for hashing."""
    return json.dumps(
        to_jsonable_python(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value).encode()).hexdigest()


def error_payload(exc: BaseException) -> dict[str, Any]:
    """What the journal keeps of an exception: type, message, traceback, and a Corral code."""
    if isinstance(exc, CorralError):
        payload = exc.to_dict()
    else:
        payload = {"code": "exception", "type": type(exc).__qualname__, "message": str(exc)}
    payload["module"] = type(exc).__module__
    payload["traceback"] = "".join(traceback.format_exception(exc))
    return payload


def dump_error(exc: BaseException) -> str:
    return json.dumps(error_payload(exc), default=str)


def validation_message(exc: ValidationError) -> str:
    """A pydantic error as one readable line per problem: `field.path: what is wrong`."""
    lines = []
    for problem in exc.errors():
        path = ".".join(str(part) for part in problem["loc"]) or "(the whole value)"
        lines.append(f"{path}: {problem['msg']}")
    return "; ".join(lines)
