"""A tenant scope: the store calls made inside it can see and change one tenant's rows only.

The server filters every query by the caller's tenant itself; the scope is the second line of
defence, for the query that forgot to. On PostgreSQL (migration 0012) the tables with a `tenant`
column carry row-level security that binds only the role `RESTRICTED_ROLE`: a store call made
inside `tenant_scope(tenant)` runs its transaction as that role, with `TENANT_SETTING` set to the
tenant, so a forgotten `WHERE tenant = …` returns nothing of another tenant and a write into
another tenant's rows is refused. Outside a scope nothing changes: workers, the CLI and the
engine work across tenants at full speed. SQLite has no row-level security: the scope is a no-op
there.

The scope lives in a context variable, so it follows the asyncio task (and the tasks it
creates) that entered it, and never another request's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Final

from corral.errors import StoreError

RESTRICTED_ROLE: Final = "corral_tenant"
"""The PostgreSQL role a scoped transaction runs as; the row-level security policies bind it."""
TENANT_SETTING: Final = "corral.tenant"
"""The setting that names the scope's tenant to the policies (`current_setting(…, true)`)."""

_scoped: ContextVar[str | None] = ContextVar("corral_tenant_scope", default=None)


def scoped_tenant() -> str | None:
    """The tenant of the scope the caller is in; None outside any scope."""
    return _scoped.get()


def _checked(tenant: str) -> str:
    # An empty tenant is what the setting reads as once a scope has ended on a connection, so
    # a scope of "" could see rows whose tenant is "": refuse it, like any non-string.
    if not isinstance(tenant, str) or not tenant:
        raise StoreError(f"a tenant scope needs a tenant name, not {tenant!r}")
    return tenant


@contextlib.contextmanager
def tenant_scope(tenant: str) -> Iterator[None]:
    """Make the store calls inside the block see `tenant`'s rows only (PostgreSQL).

    ```python
    with tenant_scope(caller.tenant):
        runs = await store.list_runs()  # another tenant's runs are not there, filter or not
    ```
    """
    token = _scoped.set(_checked(tenant))
    try:
        yield
    finally:
        _scoped.reset(token)


@contextlib.contextmanager
def unscoped() -> Iterator[None]:
    """Leave any tenant scope for the block: for work that is right only across all tenants.

    The indexers (the search index, the cost roll-up) are brought up to date by whichever
    request reads them first. Scoped, they would index that tenant's steps alone and then mark
    everything done, so every other tenant's steps would be missing for good.
    """
    token = _scoped.set(None)
    try:
        yield
    finally:
        _scoped.reset(token)


def enter_tenant_scope(tenant: str) -> None:
    """Scope the rest of the current context to `tenant`, with no block to leave it.

    For a context that ends by itself: a server request, whose context dies with it (the
    server's guard dependency cannot wrap the endpoint in a `with`).
    """
    _scoped.set(_checked(tenant))


__all__ = [
    "RESTRICTED_ROLE",
    "TENANT_SETTING",
    "enter_tenant_scope",
    "scoped_tenant",
    "tenant_scope",
    "unscoped",
]
