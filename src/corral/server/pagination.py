"""Pagination by cursor: a list answers `items` and `next_cursor`, passed back as `?cursor=`.

A cursor is the position after the page's last item, signed (HMAC-SHA256 with the server's
secret) so a client cannot forge one, bound to the list it came from (its route and filters)
and to a time after which it is refused with `cursor_expired` (400): a client that kept one too
long starts the list again. Positions are keys, not offsets, so items inserted meanwhile neither
repeat nor go missing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from corral.server.problems import Problem

DEFAULT_LIMIT = 50
MAX_LIMIT = 500


class Cursors:
    """Makes and checks the cursors of one server (`secret`, valid for `ttl` seconds)."""

    def __init__(self, secret: bytes, *, ttl: float) -> None:
        self._secret = secret
        self._ttl = ttl

    def make(self, position: dict[str, Any], *, scope: str, now: float) -> str:
        body = json.dumps(
            {"p": position, "s": _digest(scope), "e": round(now + self._ttl, 3)},
            separators=(",", ":"),
            sort_keys=True,
        ).encode()
        mac = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        return _b64(body) + "." + _b64(mac)

    def read(self, cursor: str, *, scope: str, now: float) -> dict[str, Any]:
        """The position `cursor` holds; `Problem` 400 if it is not a cursor of this list or has
        expired."""
        body_text, _, mac_text = cursor.partition(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            raise _invalid() from None
        expected = hmac.new(self._secret, body, hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            raise _invalid()
        data = json.loads(body)
        if data.get("s") != _digest(scope):
            raise Problem(400, "invalid_cursor", "this cursor belongs to another list or filter")
        if float(data.get("e", 0)) < now:
            raise Problem(
                400, "cursor_expired", "the cursor has expired: request the list again from start"
            )
        position = data.get("p")
        if not isinstance(position, dict):
            raise _invalid()
        return position


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Problem(422, "invalid_request", f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def _invalid() -> Problem:
    return Problem(400, "invalid_cursor", "the cursor is not one this server gave out")


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:16]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    if not text:
        raise ValueError("empty")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(str(exc)) from None


__all__ = ["DEFAULT_LIMIT", "MAX_LIMIT", "Cursors", "check_limit"]
