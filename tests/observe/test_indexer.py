"""The background indexer: a round brings the search index and the cost roll-up up to date, so
reads that skip their own catch-up see everything; the server's loop runs rounds on its clock
until told to stop. Both backends."""

from __future__ import annotations

import asyncio
import logging

import pytest

from corral import Corral
from corral.observe.costs import cost_report
from corral.observe.indexer import INDEX_INTERVAL, IndexRound, index_once, run_indexer
from corral.observe.search import search_runs
from corral.testing import FakeClock

from .test_search import run_fleet


async def indexed(corral: Corral, query: str) -> list[str]:
    """What a search finds without catching up first: what the index holds."""
    hits = await search_runs(corral.store, query, tenant=None, index_first=False)
    return sorted(hit.run_id for hit in hits)


async def test_a_round_indexes_every_tenant_and_sums_the_hours_that_are_over(
    corral: Corral, clock: FakeClock
) -> None:
    fleet = await run_fleet(corral, clock)
    assert await indexed(corral, "declined") == []

    done = await index_once(corral.store)
    assert done.changes > 0
    assert done.cost_hours == 2  # the fleet's calls fell in two hours, both over by now
    assert await indexed(corral, "declined") == sorted([fleet.refund, fleet.foreign])
    assert await index_once(corral.store) == IndexRound(changes=0, cost_hours=0)

    # The report reads the hours the round summed (the journal no longer has to): 3 calls per
    # refunds run, 2 for the support run.
    report = await cost_report(corral.store, by="tenant", index_first=False)
    assert sorted((row.key, row.model_calls) for row in report) == [("default", 5), ("globex", 3)]


async def test_the_loop_indexes_on_its_clock_and_stops_when_told(
    corral: Corral, clock: FakeClock
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(run_indexer(corral.store, clock, stop=stop))
    fleet = await run_fleet(corral, clock)  # the fleet's clock moves: the loop wakes meanwhile
    clock.advance(INDEX_INTERVAL)
    for _ in range(1000):
        if await indexed(corral, "B-9") == [fleet.shipped]:
            break
        await asyncio.sleep(0.01)
    assert await indexed(corral, "B-9") == [fleet.shipped]
    stop.set()
    await asyncio.wait_for(loop, 10)


async def test_a_failed_round_is_logged_and_the_next_one_catches_up(
    corral: Corral, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(run_indexer(corral.store, clock, stop=stop))
    await asyncio.sleep(0.2)  # the first round, on an empty journal
    await corral.store.close()  # the database is away for the next round
    with caplog.at_level(logging.ERROR, logger="corral.observe.indexer"):
        clock.advance(INDEX_INTERVAL)
        for _ in range(500):
            if caplog.records:
                break
            await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records] == ["a background indexing round failed"]
    assert not loop.done()

    await corral.store.open()
    fleet = await run_fleet(corral, clock)
    clock.advance(INDEX_INTERVAL)
    for _ in range(1000):
        if await indexed(corral, "B-9") == [fleet.shipped]:
            break
        await asyncio.sleep(0.01)
    assert await indexed(corral, "B-9") == [fleet.shipped]
    stop.set()
    await asyncio.wait_for(loop, 10)
