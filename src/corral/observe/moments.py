"""The lengths and points in time people type to bound a report: `7d`, `2026-11-20T08:00:00Z`.

The CLI's `--since` / `--until` and the API's `since=` / `until=` read them the same way, so a
window copied from one works in the other.
"""

from __future__ import annotations

import datetime as dt
import re

from corral.errors import UsageError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str, *, option: str = "--since") -> float:
    """A length of time for people (`90s`, `30m`, `1h`, `7d`, `2w`) in seconds.

    Raises:
        UsageError: `text` is not a number followed by s, m, h, d or w (the message names
            `option`, the setting it was given for).
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


__all__ = ["parse_duration", "parse_moment"]
