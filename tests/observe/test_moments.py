"""The windows people type for reports (`7d`, an ISO date), as the CLI and the API read them."""

from __future__ import annotations

import pytest

from corral.errors import UsageError
from corral.observe.moments import parse_duration, parse_moment

NOW = 1_700_000_000.0


def test_durations_have_a_unit() -> None:
    assert [parse_duration(text) for text in ("90s", "30m", " 1.5h ", "7d", "2w")] == [
        90.0,
        1800.0,
        5400.0,
        604800.0,
        1209600.0,
    ]
    with pytest.raises(UsageError, match="since '7': use a number and a unit"):
        parse_duration("7", option="since")


def test_a_moment_is_a_duration_ago_or_an_iso_date() -> None:
    assert parse_moment("1h", option="since", now=NOW) == NOW - 3600
    assert parse_moment("2023-11-14", option="since", now=NOW) == 1_699_920_000.0
    assert parse_moment("2023-11-14T22:13:20Z", option="until", now=NOW) == NOW
    assert parse_moment("2023-11-14T23:13:20+01:00", option="until", now=NOW) == NOW
    with pytest.raises(UsageError, match="until 'soon': use a duration ago") as caught:
        parse_moment("soon", option="until", now=NOW)
    assert caught.value.ids == {"option": "until"}
