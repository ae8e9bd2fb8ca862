"""`corral breakers` and `corral breakers history`, on rows published as workers publish them."""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from corral.governance.identity import Principal, add_principal
from corral.reliability.breaker_store import record_transition, save_breakers
from corral.reliability.breakers import BreakerSnapshot, Transition
from corral.store import SQLiteStore

if TYPE_CHECKING:
    from tests.cli.conftest import Invoke


def snapshot(key: str, state: str, since: float, calls: int, failures: int) -> BreakerSnapshot:
    return BreakerSnapshot(
        key=key,
        state=state,  # type: ignore[arg-type]
        since=since,
        calls=calls,
        failures=failures,
        failure_rate=failures / calls if calls else 0.0,
        opened_count=1 if state != "closed" else 0,
    )


def publish(db_url: str, now: float) -> None:
    """Two workers' breakers as `Dependencies` publishes them; one worker stopped long ago."""

    async def write() -> None:
        store = SQLiteStore(db_url)
        await store.open()
        try:
            opened = Transition(
                dependency="openai:gpt-4o",
                from_state="closed",
                to_state="open",
                at=now - 120,
                calls=12,
                failures=9,
                reason="9 of 12 calls failed within 60s (75% >= 50%)",
            )
            await store.run_script(
                lambda d: record_transition(
                    "host-a:11:aaaaaa",
                    opened,
                    snapshot("openai:gpt-4o", "open", now - 120, 12, 9),
                    now=now - 120,
                )
            )
            await store.run_script(
                lambda d: save_breakers(
                    "host-b:22:bbbbbb",
                    [
                        snapshot("mcp:github", "closed", now - 7200, 40, 2),
                        snapshot("openai:gpt-4o", "closed", now - 3600, 30, 0),
                    ],
                    now=now - 5,
                )
            )
            await store.run_script(
                lambda d: save_breakers(
                    "host-c:33:cccccc",
                    [snapshot("mcp:github", "open", now - 86400, 10, 10)],
                    now=now - 86400,
                )
            )
        finally:
            await store.close()

    asyncio.run(write())


def test_breakers_lists_live_rows_and_hides_stale_ones(cli: Invoke, db_url: str) -> None:
    publish(db_url, time.time())
    shown = cli("breakers").no_traceback()
    assert shown.exit_code == 0, shown.stderr
    lines = [line.split() for line in shown.stdout.splitlines() if line.strip()]
    assert lines[0] == ["dependency", "state", "worker", "since", "calls", "failure", "rate"]
    assert [line[:3] for line in lines[2:]] == [
        ["mcp:github", "closed", "host-b:22:bbbbbb"],
        ["openai:gpt-4o", "open", "host-a:11:aaaaaa"],
        ["openai:gpt-4o", "closed", "host-b:22:bbbbbb"],
    ]
    assert lines[2][3:] == ["2h", "ago", "40", "5%"]
    assert lines[3][3:] == ["2m", "ago", "12", "75%"]
    assert "1 stale row hidden (--all shows them)" in shown.stderr

    everything = cli("breakers", "--all").stdout
    assert "host-c:33:cccccc" in everything
    assert "stale: last published 1d ago" in everything


def test_breakers_json(cli: Invoke, db_url: str) -> None:
    now = time.time()
    publish(db_url, now)
    data = cli("breakers", "--json").json()
    assert data["stale_hidden"] == 1
    [github, opened, _] = data["breakers"]
    assert opened == {
        "dependency": "openai:gpt-4o",
        "worker": "host-a:11:aaaaaa",
        "state": "open",
        "since": opened["since"],
        "calls": 12,
        "failures": 9,
        "failure_rate": 0.75,
        "opened_count": 1,
        "updated_at": opened["since"],
        "stale": False,
    }
    assert opened["since"].endswith("Z")
    assert github["failure_rate"] == 0.05
    every = cli("breakers", "--all", "--json").json()
    assert every["stale_hidden"] == 0
    assert [b["stale"] for b in every["breakers"]] == [False, True, False, False]


def test_breakers_history(cli: Invoke, db_url: str) -> None:
    publish(db_url, time.time())
    shown = cli("breakers", "history").no_traceback()
    assert shown.exit_code == 0, shown.stderr
    assert "closed → open" in shown.stdout
    assert "9 of 12 calls failed within 60s (75% >= 50%)" in shown.stdout
    data = cli("breakers", "history", "--dependency", "openai:gpt-4o", "--json").json()
    [transition] = data["transitions"]
    assert (transition["from_state"], transition["to_state"], transition["worker"]) == (
        "closed",
        "open",
        "host-a:11:aaaaaa",
    )
    none = cli("breakers", "history", "--dependency", "mcp:github")
    assert none.exit_code == 0
    assert "no breaker transitions of mcp:github recorded" in none.stderr
    assert cli("breakers", "history", "-d", "mcp:github", "--json").json() == {"transitions": []}


def test_an_empty_database_has_no_breakers(cli: Invoke) -> None:
    empty = cli("breakers").no_traceback()
    assert empty.exit_code == 0
    assert "no circuit breakers published" in empty.stderr
    assert cli("breakers", "--json").json() == {"breakers": [], "stale_hidden": 0}


def test_breakers_needs_the_viewer_role_once_there_are_principals(cli: Invoke, db_url: str) -> None:
    async def add(name: str, role: str) -> None:
        store = SQLiteStore(db_url)
        await store.open()
        try:
            principal = Principal(tenant="default", name=name, roles=(role,))
            await store.run_script(
                lambda d: add_principal(principal, actor="test", now=1.0, dialect=d)
            )
        finally:
            await store.close()

    asyncio.run(add("vic", "viewer"))
    assert cli("--as", "vic", "breakers").exit_code == 0
    refused = cli("--as", "mallory", "breakers", "history").no_traceback()
    assert refused.exit_code == 2
    assert "'mallory' is not a principal" in refused.stderr
