"""The published state of circuit breakers: transaction scripts over `breakers` and
`breaker_transitions` (migration 0004).

Breakers live in each worker's memory; what is here is what workers publish, so people can see
it (`corral breakers`). Each worker owns its rows (`worker` is part of the key), so workers never
contend for a row, and a row that stops being updated belongs to a worker that stopped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from corral.reliability.breakers import BreakerSnapshot, BreakerState, Transition
from corral.store.scripts import Script, Statement

STALE_AFTER = 900.0
"""Seconds after which a row that has not been published again is stale: its worker has likely
stopped (views hide such rows unless asked for every row)."""

_BREAKER_COLUMNS = "worker, dependency, state, since, calls, failures, opened_count, updated_at"
_TRANSITION_COLUMNS = (
    "transition_id, worker, dependency, from_state, to_state, at, calls, failures, reason"
)


@dataclass(frozen=True, slots=True)
class BreakerRow:
    """One worker's breaker for one dependency, as last published."""

    worker: str
    dependency: str
    state: BreakerState
    since: float
    calls: int
    failures: int
    opened_count: int
    updated_at: float

    @property
    def failure_rate(self) -> float:
        return self.failures / self.calls if self.calls else 0.0


@dataclass(frozen=True, slots=True)
class TransitionRow:
    """A recorded change of state of one worker's breaker."""

    transition_id: int
    worker: str
    dependency: str
    from_state: BreakerState
    to_state: BreakerState
    at: float
    calls: int
    failures: int
    reason: str


def save_breakers(worker: str, snapshots: Sequence[BreakerSnapshot], *, now: float) -> Script[None]:
    """Insert or update the rows of `worker`'s breakers with these snapshots."""
    if not snapshots:
        return
    yield Statement(
        f"INSERT INTO breakers ({_BREAKER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (worker, dependency) DO UPDATE SET state = excluded.state,"
        " since = excluded.since, calls = excluded.calls, failures = excluded.failures,"
        " opened_count = excluded.opened_count, updated_at = excluded.updated_at",
        [
            (
                worker,
                s.key,
                s.state,
                s.since,
                s.calls,
                s.failures,
                s.opened_count,
                now,
            )
            for s in snapshots
        ],
        many=True,
    )


def append_transition(worker: str, transition: Transition) -> Script[None]:
    """Record a change of state of one of `worker`'s breakers."""
    t = transition
    yield Statement(
        "INSERT INTO breaker_transitions (worker, dependency, from_state, to_state, at, calls,"
        " failures, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (worker, t.dependency, t.from_state, t.to_state, t.at, t.calls, t.failures, t.reason),
    )


def record_transition(
    worker: str, transition: Transition, snapshot: BreakerSnapshot, *, now: float
) -> Script[None]:
    """Append `transition` and update the breaker's row to `snapshot`, together."""
    yield from append_transition(worker, transition)
    yield from save_breakers(worker, [snapshot], now=now)


def list_breakers(
    *, updated_within: float | None = None, now: float | None = None
) -> Script[list[BreakerRow]]:
    """Every worker's breakers, by dependency then worker.

    Args:
        updated_within: Only rows published in the last this many seconds (rows of workers
            that stopped are left out); None for every row.
        now: The time `updated_within` counts back from (required with it).
    """
    sql = f"SELECT {_BREAKER_COLUMNS} FROM breakers"
    params: tuple[float, ...] = ()
    if updated_within is not None:
        if now is None:
            raise ValueError("list_breakers: updated_within needs now")
        sql += " WHERE updated_at >= ?"
        params = (now - updated_within,)
    result = yield Statement(sql + " ORDER BY dependency, worker", params)
    return [
        BreakerRow(
            worker=r[0],
            dependency=r[1],
            state=r[2],
            since=float(r[3]),
            calls=int(r[4]),
            failures=int(r[5]),
            opened_count=int(r[6]),
            updated_at=float(r[7]),
        )
        for r in result.rows
    ]


def list_transitions(
    *, dependency: str | None = None, since: float | None = None, limit: int = 50
) -> Script[list[TransitionRow]]:
    """Recorded transitions, newest first.

    Args:
        dependency: Only this dependency's.
        since: Only those at or after this time.
        limit: At most this many.
    """
    where: list[str] = []
    params: list[object] = []
    if dependency is not None:
        where.append("dependency = ?")
        params.append(dependency)
    if since is not None:
        where.append("at >= ?")
        params.append(since)
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    result = yield Statement(
        f"SELECT {_TRANSITION_COLUMNS} FROM breaker_transitions{clause}"
        " ORDER BY at DESC, transition_id DESC LIMIT ?",
        (*params, limit),
    )
    return [
        TransitionRow(
            transition_id=int(r[0]),
            worker=r[1],
            dependency=r[2],
            from_state=r[3],
            to_state=r[4],
            at=float(r[5]),
            calls=int(r[6]),
            failures=int(r[7]),
            reason=r[8],
        )
        for r in result.rows
    ]


def transitions_between(
    since: float, until: float, *, to_state: BreakerState | None = None
) -> Script[list[TransitionRow]]:
    """Transitions at `since` <= at <= `until` (only into `to_state`, if given), oldest first:
    how `corral.control.events` finds breakers that opened."""
    sql = f"SELECT {_TRANSITION_COLUMNS} FROM breaker_transitions WHERE at >= ? AND at <= ?"
    params: tuple[object, ...] = (since, until)
    if to_state is not None:
        sql += " AND to_state = ?"
        params += (to_state,)
    result = yield Statement(sql + " ORDER BY at, transition_id", params)
    return [_transition(r) for r in result.rows]


def _transition(r: Sequence[Any]) -> TransitionRow:
    return TransitionRow(
        transition_id=int(r[0]),
        worker=r[1],
        dependency=r[2],
        from_state=r[3],
        to_state=r[4],
        at=float(r[5]),
        calls=int(r[6]),
        failures=int(r[7]),
        reason=r[8],
    )


__all__ = [
    "STALE_AFTER",
    "BreakerRow",
    "TransitionRow",
    "append_transition",
    "list_breakers",
    "list_transitions",
    "record_transition",
    "save_breakers",
    "transitions_between",
]
