"""What the read-only commands share: opening the database for a viewer, and the moments people
type for `--since` / `--until`."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from corral.cli.session import Settings
from corral.errors import UsageError
from corral.governance.identity import authorize
from corral.store import Store
from corral.store.scripts import Dialect, Script

T = TypeVar("T")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


async def reading(
    settings: Settings,
    action: str,
    read: Callable[[Store], Awaitable[T]],
    *,
    tenant: str | None = None,
) -> T:
    """Open the database (it must exist), check the principal may view `tenant` (default: the
    `--tenant`; `action` names what a refusal refused), then `read(store)`."""
    store = settings.open_store(existing=True)
    await store.open()
    try:

        def allowed(dialect: Dialect) -> Script[object]:
            return (
                yield from authorize(
                    tenant or settings.tenant, settings.principal, "viewer", action=action
                )
            )

        await store.read_script(allowed)
        return await read(store)
    finally:
        await store.close()


def parse_duration(text: str, *, option: str = "--since") -> float:
    """A length of time for people (`90s`, `30m`, `1h`, `7d`, `2w`) in seconds.

    Raises:
        UsageError: `text` is not a number followed by s, m, h, d or w.
    """
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(
            f"{option} {text!r}: use a number and a unit: 90s, 30m, 1h, 7d, 2w", option=option
        )
    return float(match[1]) * _UNITS[match[2]]


def parse_moment(text: str, *, option: str, now: float) -> float:
    """A point in time for people: a duration ago (`90s`, `30m`, `6h`, `1d`, `2w`) or an ISO
    8601 date or time (`2026-11-20`, `2026-11-20T08:00:00Z`, UTC unless it says otherwise).

    Raises:
        UsageError: `text` is neither.
    """
    if _DURATION.match(text) is not None:
        return now - parse_duration(text, option=option)
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r}: use a duration ago (90s, 30m, 6h, 1d, 2w) or an ISO date or "
            "time (2026-11-20, 2026-11-20T08:00:00Z)",
            option=option,
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()
