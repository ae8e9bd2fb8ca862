"""Where runs and their journals live: one protocol, a backend per database."""

from __future__ import annotations

from corral.errors import StoreError
from corral.store.postgresql import PostgresStore
from corral.store.protocol import Store
from corral.store.records import (
    FINISHED_STATUSES,
    RUN_STATUSES,
    NewRun,
    ReconcileOutcome,
    RunRecord,
    RunStatus,
    SignalRecord,
    StepKind,
    StepRecord,
    StepStatus,
    StepWrite,
)
from corral.store.sqlite import SQLiteStore
from corral.store.tenant_scope import enter_tenant_scope, scoped_tenant, tenant_scope, unscoped

DEFAULT_DATABASE_URL = "sqlite:///.corral/corral.db"


def open_store(url: str) -> Store:
    """The store for a database URL (not yet connected: call `await store.open()`)."""
    scheme = url.split(":", 1)[0].lower()
    if scheme == "sqlite":
        return SQLiteStore(url)
    if scheme in ("postgresql", "postgres"):
        return PostgresStore(url)
    raise StoreError(
        f"unsupported database URL {url!r}: expected sqlite:///path/to/file.db or "
        "postgresql://user@host:port/database",
        url=url,
    )


__all__ = [
    "DEFAULT_DATABASE_URL",
    "FINISHED_STATUSES",
    "RUN_STATUSES",
    "NewRun",
    "PostgresStore",
    "ReconcileOutcome",
    "RunRecord",
    "RunStatus",
    "SQLiteStore",
    "SignalRecord",
    "StepKind",
    "StepRecord",
    "StepStatus",
    "StepWrite",
    "Store",
    "enter_tenant_scope",
    "open_store",
    "scoped_tenant",
    "tenant_scope",
    "unscoped",
]
