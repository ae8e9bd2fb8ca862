"""What every request of one server shares: the store, a `Corral` per tenant, the cursors."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from fastapi import Request

from corral.engine import Corral, Workflow
from corral.engine.clock import Clock
from corral.server.config import ServerConfig
from corral.server.pagination import Cursors
from corral.store import Store


class ServerState:
    """The server's shared state (`request.app.state.corral`)."""

    def __init__(
        self,
        config: ServerConfig,
        store: Store,
        clock: Clock,
        workflows: Iterable[Workflow[Any, Any]] = (),
    ) -> None:
        self.config = config
        self.store = store
        self.clock = clock
        self.workflows = list(workflows)
        self.cursors = Cursors(config.secret, ttl=config.cursor_ttl)
        self._corrals: dict[str, Corral] = {}

    def corral(self, tenant: str) -> Corral:
        """A `Corral` acting in `tenant` on the shared store (made once per tenant)."""
        found = self._corrals.get(tenant)
        if found is None:
            found = Corral(
                store=self.store, clock=self.clock, workflows=self.workflows, tenant=tenant
            )
            self._corrals[tenant] = found
        return found

    def now(self) -> float:
        return self.clock.now()


def state_of(request: Request) -> ServerState:
    state: ServerState = request.app.state.corral
    return state


__all__ = ["ServerState", "state_of"]
