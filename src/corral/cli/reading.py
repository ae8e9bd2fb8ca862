"""What the read-only commands share: opening the database for a viewer, and the moments people
type for `--since` / `--until` (parsed by `corral.observe.moments`, as the API parses them)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from corral.cli.session import Settings
from corral.governance.identity import authorize
from corral.observe.moments import parse_duration, parse_moment
from corral.store import Store
from corral.store.scripts import Dialect, Script

T = TypeVar("T")


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


__all__ = ["parse_duration", "parse_moment", "reading"]
