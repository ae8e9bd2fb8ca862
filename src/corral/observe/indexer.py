"""Keep the search index and the cost roll-up up to date in the background.

A search or a cost report catches both up itself before it answers (`search.catch_up`,
`cost_days.roll_up`), so they are exact without this. But a read that finds a large backlog
pays for all of it: after a busy night with nobody looking, the first search would index the
night's steps before answering (on PostgreSQL, minutes for a million steps). The server runs
`run_indexer` beside the API, so a read finds at most a few seconds of journal to index.

Any number of indexers may run (several servers, a `corral runs index` by hand): on PostgreSQL a
catch-up that finds another at work returns at once, and re-summing an hour twice gives the
same rows. Both run outside any tenant scope: the index covers every tenant.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from corral.engine.clock import Clock
from corral.observe.cost_days import roll_up
from corral.observe.search import catch_up
from corral.store import Store

log = logging.getLogger("corral.observe.indexer")

INDEX_INTERVAL = 5.0
"""Seconds between the background indexer's rounds."""


@dataclass(frozen=True, slots=True)
class IndexRound:
    """What one round did."""

    changes: int
    """Journal changes indexed for search (steps written, redacted or expired)."""
    cost_hours: int
    """Hours of model calls re-summed into the cost roll-up."""


async def index_once(store: Store) -> IndexRound:
    """Index what the journal holds now, then re-sum the cost hours that are over and out of
    date (the catch-up marks the hours it finds calls in)."""
    changes = await catch_up(store)
    return IndexRound(changes=changes, cost_hours=await roll_up(store))


async def run_indexer(
    store: Store, clock: Clock, *, stop: asyncio.Event, interval: float = INDEX_INTERVAL
) -> None:
    """Index rounds every `interval` seconds until `stop` is set. A failing round (the database
    is away) is logged and the next one tries again: nothing is lost, the journal's change
    notes wait for it."""
    while not stop.is_set():
        try:
            done = await index_once(store)
            if done.changes or done.cost_hours:
                log.debug(
                    "indexed %d change(s), summed %d cost hour(s)", done.changes, done.cost_hours
                )
        except Exception:  # a round must not end the loop: the next one retries
            log.exception("a background indexing round failed")
        await clock.wait(stop, interval)


__all__ = ["INDEX_INTERVAL", "IndexRound", "index_once", "run_indexer"]
