"""Group commit on a dedicated thread: one writer, many waiters.

Callers on the event loop submit write operations; the writer thread takes everything queued,
applies it in one transaction and resolves each caller's future after the commit. Sequential runs
pay one commit per step; concurrent runs share commits. An operation that raises is isolated: the
batch is rolled back and replayed one operation per transaction, so one bad write fails alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from corral.errors import CorralError

T = TypeVar("T")
log = logging.getLogger("corral.store")

MAX_BATCH = 1024


@dataclass(slots=True)
class Batch:
    """State shared by the operations of one transaction (a cache of lease epochs)."""

    epochs: dict[str, int | None] = field(default_factory=dict)


Operation = Callable[[sqlite3.Connection, Batch], T]
BulkApply = Callable[[sqlite3.Connection, Batch, list[Any]], list[Any]]
"""Applies many items of one kind at once; returns an outcome (or a CorralError) per item."""


@dataclass(slots=True)
class _Pending(Generic[T]):
    operation: Operation[T] | None
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop
    bulk: BulkApply | None = None
    item: Any = None


class GroupCommitWriter:
    """Owns the one write connection of a store and commits queued operations in batches."""

    def __init__(
        self,
        connect: Callable[[], sqlite3.Connection],
        *,
        begin: str = "BEGIN IMMEDIATE",
        translate: Callable[[Exception], Exception],
        name: str = "corral-writer",
    ) -> None:
        self._connect = connect
        self._begin = begin
        self._translate = translate
        self._queue: queue.SimpleQueue[_Pending[Any] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._started = threading.Event()
        self._start_error: Exception | None = None
        self.batches = 0
        self.operations = 0

    def start(self) -> None:
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            raise self._start_error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def submit(self, operation: Operation[T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Pending(operation, future, loop))
        return future

    def submit_bulk(self, apply_many: BulkApply, item: Any) -> asyncio.Future[Any]:
        """Queue `item`; neighbours in the queue with the same `apply_many` are applied together
        (the journal's hot path: one statement for a whole batch of step writes)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.put(_Pending(None, future, loop, apply_many, item))
        return future

    # -- the writer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            conn = self._connect()
        except Exception as exc:  # reported to start()
            self._start_error = self._translate(exc)
            self._started.set()
            return
        self._started.set()
        try:
            while True:
                first = self._queue.get()
                if first is None:
                    return
                batch = [first]
                stop = False
                while len(batch) < MAX_BATCH:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is None:
                        stop = True
                        break
                    batch.append(item)
                self._commit(conn, batch)
                if stop:
                    return
        finally:
            conn.close()

    def _commit(self, conn: sqlite3.Connection, batch: list[_Pending[Any]]) -> None:
        outcomes = self._apply(conn, batch)
        if outcomes is None:
            # Something failed that should not have: apply one per transaction to isolate it.
            outcomes = [self._apply_one(conn, item) for item in batch]
        self.batches += 1
        self.operations += len(batch)
        loop = batch[0].loop
        if all(item.loop is loop for item in batch):  # the usual case: one event loop
            by_loop = {loop: [(item.future, o) for item, o in zip(batch, outcomes, strict=True)]}
        else:
            by_loop = {}
            for item, outcome in zip(batch, outcomes, strict=True):
                by_loop.setdefault(item.loop, []).append((item.future, outcome))
        for loop, results in by_loop.items():
            # RuntimeError: the loop closed while we wrote; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, results)

    def _apply_one(self, conn: sqlite3.Connection, item: _Pending[Any]) -> Any:
        outcomes = self._apply(conn, [item])
        assert outcomes is not None  # a batch of one always reports its own outcome
        return outcomes[0]

    def _apply(self, conn: sqlite3.Connection, batch: list[_Pending[Any]]) -> list[Any] | None:
        """Apply a batch in one transaction; None if an operation raised something unexpected."""
        state = Batch()
        outcomes: list[Any] = []
        try:
            conn.execute(self._begin)
        except Exception as exc:
            error = self._translate(exc)
            return [error for _ in batch]
        try:
            index = 0
            while index < len(batch):
                item = batch[index]
                if item.bulk is not None:
                    end = index + 1
                    while end < len(batch) and batch[end].bulk is item.bulk:
                        end += 1
                    outcomes.extend(item.bulk(conn, state, [b.item for b in batch[index:end]]))
                    index = end
                    continue
                assert item.operation is not None
                try:
                    outcomes.append(item.operation(conn, state))
                except CorralError as exc:
                    # Refusals (fencing, missing run) are checked before writing: nothing to undo.
                    outcomes.append(exc)
                index += 1
            conn.execute("COMMIT")
        except Exception as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            error = self._translate(exc)
            if len(batch) == 1:
                return [error]
            log.debug("batch of %d failed (%s); retrying one by one", len(batch), exc)
            return None
        return outcomes


def _deliver(results: list[tuple[asyncio.Future[Any], Any]]) -> None:
    for future, outcome in results:
        if future.done():
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
